"""A paused subscription's backlog waits in the database: parked in one statement by the pause, and the messages
already in the broker for it dropped by their runs instead of each parking its own delivery."""

from datetime import timedelta

import pytest
from django.utils import timezone

from subscriptions import services
from subscriptions.models import Delivery, Subscription
from subscriptions.services import queueing
from tests.support.factories import DeliveryFactory, SubscriptionFactory
from tests.support.subscriber import Subscriber

pytestmark = pytest.mark.django_db


@pytest.fixture
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every delivery id handed to deliveries_enqueue; nothing reaches a broker."""
    ids: list[int] = []
    monkeypatch.setattr(queueing, "deliveries_enqueue", lambda batch, retries=None: ids.extend(batch))
    return ids


@pytest.fixture
def breaker_settings(settings):
    settings.HUB_CALLBACK_RATE_LIMIT = "off"
    settings.HUB_CALLBACK_FAILURE_PAUSE = 2
    settings.HUB_CALLBACK_PAUSE_COOLDOWN = 60
    settings.HUB_DELIVERY_MAX_RETRIES = 10
    return settings


def test_the_pause_parks_the_subscriptions_pending_deliveries_until_the_probe_and_a_resume_sends_them(
    subscriber: Subscriber, breaker_settings, enqueued: list[int], django_capture_on_commit_callbacks
) -> None:
    # given a failing callback with a backlog, and a healthy subscription beside it
    subscriber.post_statuses["/sick"] = [500] * 100
    sick = SubscriptionFactory(callback=subscriber.url("/sick"))
    backlog = DeliveryFactory.create_batch(5, subscription=sick, callback=sick.callback)
    healthy = DeliveryFactory(subscription=SubscriptionFactory(callback=subscriber.url("/ok")))
    # when two attempts fail: the second pauses it
    for delivery in backlog[:2]:
        services.delivery_attempt(delivery_id=delivery.pk)
    # then the rest of its backlog waits in the database for the probe; the other subscription's does not
    subscription = Subscription.objects.get(pk=sick.pk)
    assert subscription.state == Subscription.State.PAUSED
    rows = Delivery.objects.filter(pk__in=[d.pk for d in backlog[2:]])
    assert {(r.status, r.queued, r.due_at) for r in rows} == {
        (Delivery.Status.PENDING, False, subscription.resume_after)
    }
    assert Delivery.objects.get(pk=healthy.pk).queued is True
    # and the messages already sent for them do nothing: no request, no write
    posts = len(subscriber.deliveries("/sick"))
    before = {r.pk: (r.due_at, r.updated_at) for r in rows}
    assert all(services.delivery_attempt(delivery_id=r.pk) is None for r in rows)
    assert len(subscriber.deliveries("/sick")) == posts
    assert {r.pk: (r.due_at, r.updated_at) for r in rows.all()} == before
    # and an operator's resume sends every one of them at once
    with django_capture_on_commit_callbacks(execute=True):
        services.subscription_resume(subscription=subscription)
    assert set(enqueued) == {d.pk for d in backlog}


def test_a_message_for_a_delivery_waiting_in_the_database_is_dropped_until_it_is_due(subscriber: Subscriber) -> None:
    # given a delivery that waits in the database for a long retry (no message should be out for it)
    later = timezone.now() + timedelta(minutes=10)
    waiting = DeliveryFactory(
        subscription=SubscriptionFactory(callback=subscriber.url("/hook")), queued=False, due_at=later, attempts=3
    )
    # when a stale message for it runs
    step = services.delivery_attempt(delivery_id=waiting.pk)
    # then nothing is sent and nothing changes
    assert step is None
    assert subscriber.deliveries("/hook") == []
    row = Delivery.objects.get(pk=waiting.pk)
    assert (row.status, row.attempts, row.queued, row.due_at) == (Delivery.Status.PENDING, 3, False, later)
    # and once it is due, a message for it is attempted (hub.enqueue_due's, or one that came early)
    Delivery.objects.filter(pk=waiting.pk).update(due_at=timezone.now())
    assert services.delivery_attempt(delivery_id=waiting.pk) is None
    assert len(subscriber.deliveries("/hook")) == 1
    assert Delivery.objects.get(pk=waiting.pk).status == Delivery.Status.DELIVERED
