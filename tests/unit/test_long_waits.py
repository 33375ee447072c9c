"""Long waits are kept in the database, not the broker: a failed attempt whose next try is far off leaves no
message behind, and hub.enqueue_due sends it, in bulk, when it comes due."""

from datetime import timedelta

import pytest
from django.utils import timezone

from subscriptions import services
from subscriptions.models import Delivery
from tests.support.factories import DeliveryFactory, SubscriptionFactory
from tests.support.subscriber import Answer, Subscriber

pytestmark = pytest.mark.django_db


def _pending(subscriber: Subscriber, path: str = "/hook") -> Delivery:
    return DeliveryFactory(subscription=SubscriptionFactory(callback=subscriber.url(path)))


def test_a_retry_after_longer_than_the_broker_countdown_waits_in_the_database(subscriber: Subscriber, settings) -> None:
    # given a subscriber that asks for two minutes
    settings.HUB_CALLBACK_RATE_LIMIT = "off"
    settings.HUB_BROKER_MAX_COUNTDOWN = 30
    settings.HUB_RETRY_AFTER_MAX = 3600
    subscriber.post_statuses["/hook"] = [Answer(status=503, headers={"Retry-After": "120"})]
    pending = _pending(subscriber)
    # when it is attempted
    before = timezone.now()
    step = services.delivery_attempt(delivery_id=pending.pk)
    # then the task sends nothing again: the row holds the wait
    assert step is None
    row = Delivery.objects.get(pk=pending.pk)
    assert (row.status, row.attempts, row.queued) == (Delivery.Status.PENDING, 1, False)
    assert before + timedelta(seconds=119) <= row.due_at <= timezone.now() + timedelta(seconds=121)


def test_a_short_retry_wait_is_a_countdown_and_the_row_says_a_message_holds_it(
    subscriber: Subscriber, settings
) -> None:
    settings.HUB_CALLBACK_RATE_LIMIT = "off"
    settings.HUB_BROKER_MAX_COUNTDOWN = 30
    subscriber.post_statuses["/hook"] = [Answer(status=503, headers={"Retry-After": "3"})]
    pending = _pending(subscriber)
    step = services.delivery_attempt(delivery_id=pending.pk)
    assert step is not None and step.attempted and 2.9 <= step.countdown <= 3.1
    assert Delivery.objects.get(pk=pending.pk).queued is True


def test_retry_waits_follow_the_backoff_from_the_database_count(settings) -> None:
    settings.HUB_RETRY_BACKOFF_BASE = 2
    settings.HUB_RETRY_BACKOFF_MAX = 3600
    # after the first failure: up to 2 s; after the fifth: up to 32 s; never past the maximum
    assert all(0 <= services.retry_delay(1) <= 2 for _ in range(200))
    assert all(0 <= services.retry_delay(5) <= 32 for _ in range(200))
    assert max(services.retry_delay(40) for _ in range(200)) <= 3600
    # full jitter: the waits spread over the whole range
    waits = [services.retry_delay(5) for _ in range(500)]
    assert min(waits) < 8 and max(waits) > 24


def test_enqueue_due_sends_what_came_due_once_and_leaves_the_rest(no_broker: list, django_capture_on_commit_callbacks):
    now = timezone.now()
    due = DeliveryFactory(attempts=2, queued=False, due_at=now - timedelta(seconds=1))
    first_attempt_due = DeliveryFactory(attempts=0, queued=False, due_at=now - timedelta(seconds=1))
    later = DeliveryFactory(attempts=2, queued=False, due_at=now + timedelta(minutes=10))
    in_broker = DeliveryFactory(attempts=1, queued=True, due_at=now - timedelta(seconds=1))
    settled = DeliveryFactory(status=Delivery.Status.FAILED, queued=False, due_at=now - timedelta(seconds=1))
    # when beat's task runs, twice
    with django_capture_on_commit_callbacks(execute=True):
        assert services.deliveries_enqueue_due() == 2
    with django_capture_on_commit_callbacks(execute=True):
        assert services.deliveries_enqueue_due() == 0
    # then the two that came due are sent once each, a retry to the retry queue
    sent = {kw["kwargs"]["delivery_id"]: kw["queue"] for name, kw in no_broker if name == "hub.deliver"}
    assert sent == {due.pk: "hub.deliver.retry", first_attempt_due.pk: "hub.deliver"}
    assert set(Delivery.objects.filter(queued=True).values_list("pk", flat=True)) >= {due.pk, first_attempt_due.pk}
    assert Delivery.objects.get(pk=later.pk).queued is False
    assert {in_broker.pk, settled.pk}.isdisjoint(sent)


def test_a_delivery_enqueue_due_sent_gets_the_sweeps_full_grace_from_its_sending(
    no_broker: list, django_capture_on_commit_callbacks, settings
) -> None:
    # given a delivery due two hours ago (its subscriber was down), sent now by beat's task
    settings.HUB_SWEEP_GRACE_SECONDS = 120
    overdue = DeliveryFactory(attempts=3, queued=False, due_at=timezone.now() - timedelta(hours=2))
    before = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        assert services.deliveries_enqueue_due() == 1
    # then its due time is when the broker got it, so the sweep does not take the message
    # in the queue for a lost one (its grace period counts from now, not from two hours ago)
    row = Delivery.objects.get(pk=overdue.pk)
    assert row.queued is True and before <= row.due_at <= timezone.now()
    cutoff = timezone.now() - timedelta(seconds=settings.HUB_SWEEP_GRACE_SECONDS)
    assert not Delivery.objects.filter(pk=overdue.pk, status=Delivery.Status.PENDING, due_at__lt=cutoff).exists()


def test_enqueue_due_works_through_a_backlog_in_batches(no_broker: list, django_capture_on_commit_callbacks) -> None:
    now = timezone.now()
    rows = DeliveryFactory.create_batch(25, attempts=1, queued=False, due_at=now - timedelta(seconds=5))
    with django_capture_on_commit_callbacks(execute=True):
        assert services.deliveries_enqueue_due(limit=10) == 25
    assert sorted(kw["kwargs"]["delivery_id"] for _, kw in no_broker) == sorted(r.pk for r in rows)


def test_spread_to_a_paused_subscription_leaves_its_delivery_waiting_in_the_database(no_broker: list) -> None:
    from subscriptions.models import Notification, Subscription

    resume = timezone.now() + timedelta(minutes=1)
    paused = SubscriptionFactory(topic="held", state=Subscription.State.PAUSED, resume_after=resume)
    active = SubscriptionFactory(topic="held")
    notification = Notification.objects.create(topic="held", content=b"{}", content_type="application/json")
    services.notification_spread(notification_id=notification.pk)
    rows = {d.subscription_id: d for d in Delivery.objects.filter(notification=notification)}
    assert rows[paused.pk].queued is False and rows[paused.pk].due_at == resume
    assert rows[active.pk].queued is True
