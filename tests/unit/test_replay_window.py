"""Replay by time window (services/replaying.py): POST /api/subscriptions/<id>/replay, hub_replay and the admin."""

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, transaction
from django.utils import timezone

from subscriptions.models import Delivery, Notification, Subscription
from subscriptions.services import queueing
from tests.support.auth import staff_client
from tests.support.factories import DeliveryFactory, NotificationFactory, SubscriptionFactory
from websubhub.celery import app as celery_app
from websubhub.queues import TaskName

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def enqueued(monkeypatch) -> list[int]:
    """The delivery ids sent to the deliver task; nothing reaches a broker."""
    sent: list[int] = []

    def send_task(name, args=None, kwargs=None, **_):
        if name == TaskName.DELIVER:
            sent.append(kwargs["delivery_id"])

    monkeypatch.setattr(celery_app, "send_task", send_task)
    # Deliver messages built from a template bypass send_task: recorded alike.
    monkeypatch.setattr(
        queueing.DeliverMessages, "publish_many", lambda self, delivery_ids, queue: sent.extend(delivery_ids)
    )
    return sent


def _hours_ago(hours: float):
    return timezone.now() - timedelta(hours=hours)


def _delivered(subscription: Subscription, hours_ago: float, status: str = Delivery.Status.DELIVERED) -> Delivery:
    """A notification published `hours_ago` on the subscription's topic, and its delivery in `status`."""
    notification = NotificationFactory(topic=subscription.topic, spread_at=timezone.now())
    Notification.objects.filter(pk=notification.pk).update(created_at=_hours_ago(hours_ago))
    return DeliveryFactory(notification=notification, subscription=subscription, status=status)


def _replay(client, subscription_id: int, payload: dict):
    return client.post(f"/api/subscriptions/{subscription_id}/replay", payload, content_type="application/json")


def test_every_settled_delivery_of_the_window_is_sent_again_as_a_new_delivery(
    client, enqueued, settings, django_capture_on_commit_callbacks
):
    settings.HUB_RETENTION_DAYS = 30
    subscription = SubscriptionFactory(topic="orders")
    inside = [_delivered(subscription, 5, status) for status in ("delivered", "failed", "cancelled")]
    pending = _delivered(subscription, 5, Delivery.Status.PENDING)
    before = _delivered(subscription, 30)
    after = _delivered(subscription, 1)
    other = _delivered(SubscriptionFactory(topic="orders"), 5)

    with django_capture_on_commit_callbacks(execute=True):
        response = _replay(client, subscription.pk, {"since": _hours_ago(10).isoformat(), "until": _hours_ago(2)})

    assert response.status_code == 202, response.content
    assert response.json() == {"replayed": 3}
    replays = list(Delivery.objects.filter(replay=1).order_by("notification_id"))
    assert [d.notification_id for d in replays] == [d.notification_id for d in inside]
    assert {d.subscription_id for d in replays} == {subscription.pk}
    assert all(d.status == Delivery.Status.PENDING and d.attempts == 0 for d in replays)
    assert not {d.uuid for d in replays} & set(Delivery.objects.filter(replay=0).values_list("uuid", flat=True))
    assert sorted(enqueued) == sorted(d.pk for d in replays)
    # the originals stay as they were, and nothing else was touched
    assert [Delivery.objects.get(pk=d.pk).status for d in inside] == ["delivered", "failed", "cancelled"]
    for untouched in (pending, before, after, other):
        assert Delivery.objects.filter(notification_id=untouched.notification_id).count() == 1


def test_status_narrows_the_replay_and_a_second_replay_is_numbered_after_the_first(client, enqueued):
    subscription = SubscriptionFactory(topic="orders")
    failed = _delivered(subscription, 3, Delivery.Status.FAILED)
    _delivered(subscription, 3, Delivery.Status.DELIVERED)
    window = {"since": _hours_ago(4).isoformat(), "status": ["failed"]}
    assert _replay(client, subscription.pk, window).json() == {"replayed": 1}
    # the replayed delivery is pending, so the second replay sends the failed original's notification once more
    assert _replay(client, subscription.pk, window).json() == {"replayed": 1}
    assert sorted(Delivery.objects.filter(notification_id=failed.notification_id).values_list("replay", flat=True)) == [
        0,
        1,
        2,
    ]


def test_a_notification_delivered_several_times_is_replayed_once(client):
    subscription = SubscriptionFactory(topic="orders")
    original = _delivered(subscription, 3)
    DeliveryFactory(
        notification=original.notification, subscription=subscription, replay=1, status=Delivery.Status.DELIVERED
    )
    assert _replay(client, subscription.pk, {"since": _hours_ago(4).isoformat()}).json() == {"replayed": 1}
    assert Delivery.objects.filter(notification=original.notification).count() == 3


def test_spread_stays_idempotent_one_original_per_notification_and_subscription():
    original = DeliveryFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Delivery.objects.create(notification=original.notification, subscription=original.subscription)
    Delivery.objects.bulk_create(
        [Delivery(notification=original.notification, subscription=original.subscription)], ignore_conflicts=True
    )
    assert Delivery.objects.count() == 1


def test_a_paused_subscription_gets_its_replays_parked_until_the_probe(
    client, enqueued, django_capture_on_commit_callbacks
):
    probe_at = timezone.now() + timedelta(minutes=5)
    subscription = SubscriptionFactory(topic="orders", state=Subscription.State.PAUSED, resume_after=probe_at)
    _delivered(subscription, 3)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert _replay(client, subscription.pk, {"since": _hours_ago(4).isoformat()}).json() == {"replayed": 1}
    assert callbacks == []
    replay = Delivery.objects.get(replay=1)
    assert replay.due_at == probe_at
    assert enqueued == []


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({}, "since", "This field is required."),
        ({"since": "yesterday"}, "since", "must be an ISO 8601 time"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until", "later than since"),
        ({"since": "NOW", "status": ["pending"]}, "status", "must be one of delivered, failed, cancelled"),
        ({"since": "NOW", "status": []}, "status", "may not be empty"),
    ],
)
def test_bad_windows_are_refused_with_400_naming_the_field(client, payload, field, message):
    subscription = SubscriptionFactory()
    if payload.get("since") == "NOW":
        payload["since"] = _hours_ago(1).isoformat()
    response = _replay(client, subscription.pk, payload)
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
    assert message in str(response.json()["errors"][field])


def test_a_window_beyond_retention_is_refused_with_400_saying_so(client, settings):
    settings.HUB_RETENTION_DAYS = 7
    subscription = SubscriptionFactory()
    response = _replay(client, subscription.pk, {"since": (timezone.now() - timedelta(days=8)).isoformat()})
    assert response.status_code == 400
    assert "before the retention window: with HUB_RETENTION_DAYS=7" in response.json()["errors"]["since"][0]
    settings.HUB_RETENTION_DAYS = 0  # keeps everything: any window
    assert _replay(client, subscription.pk, {"since": "2000-01-01T00:00:00Z"}).status_code == 202


def test_an_ended_lease_gets_409_and_an_unknown_subscription_404(client):
    expired = SubscriptionFactory(expired=True)
    response = _replay(client, expired.pk, {"since": _hours_ago(1).isoformat()})
    assert response.status_code == 409
    assert "lease has ended" in response.json()["detail"]
    assert _replay(client, 987654, {"since": _hours_ago(1).isoformat()}).status_code == 404


def test_the_endpoint_needs_the_manage_permission():
    from tests.support.auth import api_client

    subscription = SubscriptionFactory()
    response = _replay(api_client(manage=False), subscription.pk, {"since": _hours_ago(1).isoformat()})
    assert response.status_code == 403


def test_the_schema_documents_the_replay(client):
    operation = client.get("/api/schema/?format=json").json()["paths"]["/api/subscriptions/{id}/replay"]["post"]
    assert {"202", "400", "404", "409"} <= set(operation["responses"])


def test_deliveries_show_their_replay_number(client):
    subscription = SubscriptionFactory(topic="orders")
    _delivered(subscription, 1)
    _replay(client, subscription.pk, {"since": _hours_ago(2).isoformat()})
    listed = client.get("/api/deliveries/", {"subscription": subscription.pk}).json()["results"]
    assert [d["replay"] for d in listed] == [1, 0]


# --- hub_replay -----------------------------------------------------------------------------


def test_hub_replay_sends_the_window_again_with_statuses_repeated_or_comma_separated(enqueued):
    subscription = SubscriptionFactory(topic="orders")
    for status in ("delivered", "failed", "cancelled"):
        _delivered(subscription, 3, status)
    out = io.StringIO()
    call_command(
        "hub_replay",
        "--subscription",
        str(subscription.pk),
        "--since",
        _hours_ago(4).isoformat(),
        "--status",
        "failed,delivered",
        stdout=out,
    )
    assert f"2 notifications sent again to subscription {subscription.pk}" in out.getvalue()
    call_command(
        "hub_replay", "--subscription", str(subscription.pk), "--since", _hours_ago(4).isoformat(),
        "--status", "cancelled", "--until", timezone.now().isoformat(), stdout=out,
    )  # fmt: skip
    assert Delivery.objects.filter(replay=1).count() == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "soon"], "--since must be an ISO 8601 time"),
        (["--since", "2026-01-01T00:00:00Z", "--status", "delivered,pending"], "--status must be one of"),
        (["--since", "2000-01-01T00:00:00Z"], "before the retention window"),
    ],
)
def test_hub_replay_refusals_say_why(args, message):
    subscription = SubscriptionFactory()
    with pytest.raises(CommandError, match=message):
        call_command("hub_replay", "--subscription", str(subscription.pk), *args)


def test_hub_replay_of_an_unknown_subscription_fails_with_a_message():
    with pytest.raises(CommandError, match="there is no subscription 424242"):
        call_command("hub_replay", "--subscription", "424242", "--since", _hours_ago(1).isoformat())


# --- admin ----------------------------------------------------------------------------------


def test_the_admin_replays_a_window_from_the_subscription_page(admin_client, enqueued):
    subscription = SubscriptionFactory(topic="orders")
    _delivered(subscription, 3, Delivery.Status.FAILED)
    _delivered(subscription, 3, Delivery.Status.DELIVERED)
    page = admin_client.get(f"/admin/subscriptions/subscription/{subscription.pk}/change/")
    assert b"Replay a time window" in page.content
    form = admin_client.get(f"/admin/subscriptions/subscription/{subscription.pk}/replay/")
    assert form.status_code == 200 and b'name="since"' in form.content
    since = timezone.localtime(_hours_ago(4)).strftime("%Y-%m-%d %H:%M:%S")
    response = admin_client.post(
        f"/admin/subscriptions/subscription/{subscription.pk}/replay/", {"since": since, "status": ["failed"]}
    )
    assert response.status_code == 302
    assert Delivery.objects.filter(replay=1).count() == 1
    refused = admin_client.post(
        f"/admin/subscriptions/subscription/{subscription.pk}/replay/", {"since": "2000-01-01 00:00:00"}
    )
    assert refused.status_code == 200 and b"before the retention window" in refused.content


def test_the_admin_replay_needs_the_retry_permissions():
    subscription = SubscriptionFactory()
    viewer = staff_client("viewer", "view_subscription", "view_delivery")
    assert (
        b"Replay a time window"
        not in viewer.get(f"/admin/subscriptions/subscription/{subscription.pk}/change/").content
    )
    assert viewer.get(f"/admin/subscriptions/subscription/{subscription.pk}/replay/").status_code == 403
