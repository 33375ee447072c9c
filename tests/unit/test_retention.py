"""Retention and erasure (services/retention.py): the purge, its batches, the task, hub_purge, DELETE ?erase=history."""

import io
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from subscriptions import services
from subscriptions.models import (
    Delivery,
    DeliveryAttempt,
    IdempotencyKey,
    Notification,
    Subscription,
    SubscriptionRequest,
)
from subscriptions.services import idempotency
from tasks import periodic
from tests.support.auth import staff_client
from tests.support.factories import (
    DeliveryFactory,
    NotificationFactory,
    SubscriptionFactory,
    SubscriptionRequestFactory,
)
from websubhub.queues import QueueName, TaskName

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
SETTLED = [Delivery.Status.DELIVERED, Delivery.Status.FAILED, Delivery.Status.CANCELLED]


def _days_ago(days: float):
    return timezone.now() - timedelta(days=days)


def _notification(age_days: float, statuses: list[str], *, spread: bool = True, attempts: int = 1) -> Notification:
    """A notification published `age_days` ago with one delivery per status, each with `attempts` attempts."""
    notification = NotificationFactory(spread_at=timezone.now() if spread else None)
    Notification.objects.filter(pk=notification.pk).update(created_at=_days_ago(age_days))
    for status in statuses:
        delivery = DeliveryFactory(notification=notification, status=status)
        for number in range(1, attempts + 1):
            DeliveryAttempt.objects.create(
                delivery=delivery, number=number, started_at=_days_ago(age_days), duration_ms=5, status_code=500
            )
    return notification


def _delivery_deletes(queries: CaptureQueriesContext) -> list[str]:
    """The DELETE statements on the delivery table that ran."""
    prefix = "DELETE FROM " + connection.ops.quote_name(Delivery._meta.db_table)  # noqa: S608 - matched, not run
    return [q["sql"] for q in queries.captured_queries if q["sql"].startswith(prefix)]


def _exists(notification: Notification) -> bool:
    return Notification.objects.filter(pk=notification.pk).exists()


def test_old_settled_notifications_go_with_their_deliveries_and_attempts_and_nothing_else_does(settings):
    settings.HUB_RETENTION_DAYS = settings.HUB_ATTEMPT_RETENTION_DAYS = 30
    old_settled = _notification(31, SETTLED, attempts=2)
    old_with_pending = _notification(31, [Delivery.Status.DELIVERED, Delivery.Status.PENDING])
    old_unspread = _notification(31, [], spread=False)
    recent = _notification(29, SETTLED)
    old_nobody = _notification(40, [])

    counts = services.retention_purge()

    assert (counts.notifications, counts.deliveries, counts.attempts) == (2, 3, 6)
    assert not _exists(old_settled) and not _exists(old_nobody)
    assert _exists(old_with_pending) and old_with_pending.deliveries.count() == 2
    assert _exists(old_unspread) and _exists(recent)
    assert not DeliveryAttempt.objects.filter(delivery__notification=old_settled).exists()
    assert DeliveryAttempt.objects.filter(delivery__notification=old_with_pending).count() == 2


def test_a_shorter_attempt_retention_removes_old_attempts_of_settled_deliveries_only(settings):
    settings.HUB_RETENTION_DAYS, settings.HUB_ATTEMPT_RETENTION_DAYS = 30, 7
    settled = _notification(8, [Delivery.Status.FAILED], attempts=3)
    pending = _notification(8, [Delivery.Status.PENDING], attempts=3)
    fresh = _notification(6, [Delivery.Status.FAILED], attempts=3)

    counts = services.retention_purge()

    assert (counts.notifications, counts.deliveries, counts.attempts) == (0, 0, 3)
    assert not DeliveryAttempt.objects.filter(delivery__notification=settled).exists()
    assert settled.deliveries.count() == 1
    assert DeliveryAttempt.objects.filter(delivery__notification=pending).count() == 3
    assert DeliveryAttempt.objects.filter(delivery__notification=fresh).count() == 3


def test_zero_disables_purging(settings):
    settings.HUB_RETENTION_DAYS = settings.HUB_ATTEMPT_RETENTION_DAYS = 0
    old = _notification(3650, SETTLED)
    assert services.retention_purge().rows == 0
    assert _exists(old) and DeliveryAttempt.objects.count() == 3


def test_the_purge_deletes_in_bounded_batches(settings):
    settings.HUB_RETENTION_DAYS = settings.HUB_ATTEMPT_RETENTION_DAYS = 30
    _notification(31, [Delivery.Status.DELIVERED] * 10)
    with CaptureQueriesContext(connection) as queries:
        counts = services.retention_purge(batch=3)
    assert counts.deliveries == 10
    deletes = _delivery_deletes(queries)
    assert len(deletes) == 4  # 3 + 3 + 3 + 1


def test_a_batch_of_deliveries_goes_in_one_delete_statement_without_reading_them_back(settings):
    # given a batch larger than Django's delete chunk (100 ids per statement)
    settings.HUB_RETENTION_DAYS = settings.HUB_ATTEMPT_RETENTION_DAYS = 30
    _notification(31, [Delivery.Status.DELIVERED] * 250)
    # when
    with CaptureQueriesContext(connection) as queries:
        counts = services.retention_purge(batch=250)
    # then one DELETE removed them all, and the only read of the deliveries is the locking one
    assert (counts.notifications, counts.deliveries, counts.attempts) == (1, 250, 250)
    assert len(_delivery_deletes(queries)) == 1
    selects = f"SELECT {connection.ops.quote_name(Delivery._meta.db_table)}."
    reads = [q["sql"] for q in queries.captured_queries if q["sql"].startswith(selects)]
    assert len(reads) == 2  # the batch under lock, and the next (empty) one
    assert all("FOR UPDATE" in sql for sql in reads)


def test_attempts_are_the_only_rows_that_reference_a_delivery():
    # The purge deletes a delivery's attempts, then the deliveries without Django's collector: a new model
    # that references Delivery must be purged in services/retention.py (_deliveries_purge) before its deliveries.
    assert {relation.related_model for relation in Delivery._meta.related_objects} == {DeliveryAttempt}


def test_a_time_budget_stops_between_batches_and_the_next_run_goes_on(settings):
    settings.HUB_RETENTION_DAYS = settings.HUB_ATTEMPT_RETENTION_DAYS = 30
    _notification(31, [Delivery.Status.DELIVERED] * 10)
    first = services.retention_purge(batch=3, time_budget=0)
    assert first.deliveries == 3
    assert Delivery.objects.count() == 7
    services.retention_purge(batch=3)
    assert not Delivery.objects.exists() and not Notification.objects.exists()


def test_old_completed_subscription_requests_and_expired_idempotency_keys_go_too(settings, admin_user):
    settings.HUB_RETENTION_DAYS = settings.HUB_ATTEMPT_RETENTION_DAYS = 30
    done = SubscriptionRequestFactory(state=SubscriptionRequest.State.VERIFIED)
    waiting = SubscriptionRequestFactory()
    SubscriptionRequest.objects.update(created_at=_days_ago(31))
    IdempotencyKey.objects.create(client=admin_user, key="old", fingerprint="x", notification_id=1)
    IdempotencyKey.objects.create(client=admin_user, key="new", fingerprint="x", notification_id=2)
    IdempotencyKey.objects.filter(key="old").update(created_at=timezone.now() - idempotency.KEY_LIFETIME)

    counts = services.retention_purge()

    assert (counts.subscription_requests, counts.idempotency_keys) == (1, 1)
    assert list(SubscriptionRequest.objects.values_list("pk", flat=True)) == [waiting.pk]
    assert done.pk != waiting.pk
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["new"]


def test_the_plan_counts_what_the_purge_then_removes(settings):
    settings.HUB_RETENTION_DAYS, settings.HUB_ATTEMPT_RETENTION_DAYS = 30, 7
    _notification(31, SETTLED, attempts=2)
    _notification(8, [Delivery.Status.FAILED], attempts=2)
    _notification(31, [Delivery.Status.PENDING])
    plan = services.retention_plan()
    assert (plan.notifications, plan.deliveries, plan.attempts) == (1, 3, 8)
    counts = services.retention_purge()
    assert (counts.notifications, counts.deliveries, counts.attempts) == (1, 3, 8)


def test_the_periodic_task_is_scheduled_on_the_periodic_queue_and_purges(settings):
    schedule = {entry["task"]: entry for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert schedule[TaskName.PURGE]["schedule"] == float(settings.HUB_RETENTION_INTERVAL)
    assert settings.CELERY_TASK_ROUTES[TaskName.PURGE] == {"queue": QueueName.PERIODIC}
    assert periodic.purge.name == TaskName.PURGE
    settings.HUB_RETENTION_DAYS = settings.HUB_ATTEMPT_RETENTION_DAYS = 30
    _notification(31, SETTLED)
    assert periodic.purge() == 1 + 3 + 3


# --- hub_purge ------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_hub_purge_dry_run_counts_and_removes_nothing(settings):
    settings.HUB_RETENTION_DAYS = settings.HUB_ATTEMPT_RETENTION_DAYS = 30
    _notification(31, SETTLED)
    out = io.StringIO()
    call_command("hub_purge", "--dry-run", stdout=out)
    assert "would remove 1 notifications, 3 deliveries, 3 attempts" in out.getvalue()
    assert Notification.objects.count() == 1 and Delivery.objects.count() == 3


def test_hub_purge_older_than_overrides_the_setting_and_shows_progress(settings):
    settings.HUB_RETENTION_DAYS = settings.HUB_ATTEMPT_RETENTION_DAYS = 30
    _notification(5, [Delivery.Status.DELIVERED] * 5)
    out, err = io.StringIO(), _Terminal()
    call_command("hub_purge", "--older-than", "4", "--batch", "2", stdout=out, stderr=err)
    assert "removed 1 notifications, 5 deliveries, 5 attempts" in out.getvalue()
    assert "] 11/11 rows" in err.getvalue()
    assert err.getvalue().count("\r[") >= 3
    assert not Notification.objects.exists()


@pytest.mark.parametrize(("value", "message"), [("0", "at least 1 day"), ("ten", "whole number of days")])
def test_hub_purge_refuses_a_bad_age(value, message):
    with pytest.raises(CommandError, match=message):
        call_command("hub_purge", "--older-than", value)


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"HUB_RETENTION_DAYS": "-1"}, "must be whole days >= 0"),
        ({"HUB_RETENTION_DAYS": "7", "HUB_ATTEMPT_RETENTION_DAYS": "8"}, "must not exceed HUB_RETENTION_DAYS"),
        ({"HUB_RETENTION_INTERVAL": "0"}, "HUB_RETENTION_INTERVAL must be a positive"),
    ],
)
def test_bad_retention_settings_stop_the_process_with_a_message(variables, message):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "websubhub.settings", **variables}
    code = "import django; django.setup()"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert message in done.stderr


def test_retention_defaults_to_30_days_for_both():
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_RETENTION") and "ATTEMPT_RETENTION" not in k}
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.HUB_RETENTION_DAYS, s.HUB_ATTEMPT_RETENTION_DAYS, s.HUB_RETENTION_INTERVAL)"
    )
    env["DJANGO_SETTINGS_MODULE"] = "websubhub.settings"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["30", "30", "600"], done.stderr


# --- erasure --------------------------------------------------------------------------------


def _erasable() -> tuple[Subscription, Subscription, Notification]:
    """A subscription with deliveries in every state and an attempt each, and a neighbour on the same notification."""
    target = SubscriptionFactory(topic="orders")
    neighbour = SubscriptionFactory(topic="orders")
    shared = NotificationFactory(topic="orders", spread_at=timezone.now())
    for status in [*SETTLED, Delivery.Status.PENDING]:
        notification = shared if status == Delivery.Status.DELIVERED else NotificationFactory(topic="orders")
        delivery = DeliveryFactory(notification=notification, subscription=target, status=status)
        DeliveryAttempt.objects.create(delivery=delivery, number=1, started_at=timezone.now(), duration_ms=1)
    DeliveryFactory(notification=shared, subscription=neighbour, status=Delivery.Status.DELIVERED)
    SubscriptionRequestFactory(topic="orders", callback=target.callback, state=SubscriptionRequest.State.VERIFIED)
    return target, neighbour, shared


def test_delete_with_erase_history_removes_the_subscription_and_everything_it_had(client):
    target, neighbour, shared = _erasable()
    response = client.delete(f"/api/subscriptions/{target.pk}/?erase=history")
    assert response.status_code == 204
    assert not Subscription.objects.filter(pk=target.pk).exists()
    assert not Delivery.objects.filter(callback=target.callback).exists()
    assert DeliveryAttempt.objects.count() == 0
    assert not SubscriptionRequest.objects.filter(callback=target.callback).exists()
    # the neighbour's record of the shared notification stays
    assert list(Delivery.objects.values_list("subscription_id", flat=True)) == [neighbour.pk]
    assert _exists(shared)


def test_plain_delete_still_keeps_the_delivery_records(client):
    target, _, _ = _erasable()
    assert client.delete(f"/api/subscriptions/{target.pk}/").status_code == 204
    assert Delivery.objects.filter(callback=target.callback, subscription=None).count() == 4


def test_delete_with_another_erase_value_is_refused_and_removes_nothing(client):
    target, _, _ = _erasable()
    response = client.delete(f"/api/subscriptions/{target.pk}/?erase=everything")
    assert response.status_code == 400
    assert response.json()["errors"] == {"erase": ["erase must be history, not 'everything'"]}
    assert Subscription.objects.filter(pk=target.pk).exists()
    assert client.delete("/api/subscriptions/999999/?erase=history").status_code == 404


def test_erasure_goes_in_batches():
    target, _, _ = _erasable()
    with CaptureQueriesContext(connection) as queries:
        counts = services.subscription_erase(subscription=target, batch=1)
    assert (counts.deliveries, counts.attempts, counts.subscription_requests) == (4, 4, 1)
    deletes = _delivery_deletes(queries)
    assert len(deletes) == 4


def test_the_admin_erases_from_the_list_and_from_the_subscription_page(admin_client):
    first, _, _ = _erasable()
    response = admin_client.post(
        "/admin/subscriptions/subscription/", {"action": "erase_history", "_selected_action": [first.pk]}
    )
    assert response.status_code == 302
    assert not Subscription.objects.filter(pk=first.pk).exists()
    assert not Delivery.objects.filter(callback=first.callback).exists()
    second = SubscriptionFactory()
    DeliveryFactory(subscription=second, status=Delivery.Status.FAILED)
    page = admin_client.get(f"/admin/subscriptions/subscription/{second.pk}/change/")
    assert b"Erase with its history" in page.content
    response = admin_client.post(f"/admin/subscriptions/subscription/{second.pk}/act/erase_history/")
    assert response.status_code == 302 and response["Location"] == "/admin/subscriptions/subscription/"
    assert not Delivery.objects.filter(callback=second.callback).exists()


def test_the_admin_erase_needs_the_delete_permission(client):
    target, _, _ = _erasable()
    staff = staff_client("changer", "view_subscription", "change_subscription")
    page = staff.get(f"/admin/subscriptions/subscription/{target.pk}/change/")
    assert page.status_code == 200 and b"Erase with its history" not in page.content
    assert staff.post(f"/admin/subscriptions/subscription/{target.pk}/act/erase_history/").status_code == 403
    assert Subscription.objects.filter(pk=target.pk).exists()


def test_the_schema_documents_the_erase_parameter(client):
    operation = client.get("/api/schema/?format=json").json()["paths"]["/api/subscriptions/{id}/"]["delete"]
    assert next(p for p in operation["parameters"] if p["name"] == "erase")["schema"]["enum"] == ["history"]
    assert "400" in operation["responses"]
