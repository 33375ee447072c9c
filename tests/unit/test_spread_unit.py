"""Spreading a notification into deliveries (services.notification_spread), called as a plain function."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from subscriptions import services
from subscriptions.models import Delivery, Notification, Subscription
from subscriptions.services import publishing, queueing
from tests.support.factories import NotificationFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def enqueued(monkeypatch):
    """The delivery ids handed to deliveries_enqueue, one list per batch; nothing reaches a broker."""
    batches: list[list[int]] = []
    monkeypatch.setattr(queueing, "deliveries_enqueue", lambda ids: batches.append(list(ids)))
    return batches


def spread(notification, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        return services.notification_spread(notification_id=notification.pk)


def subscriptions_bulk(count, *, topic="UN.CEFACT", prefix="https://sub.example/"):
    now = timezone.now()
    return Subscription.objects.bulk_create(
        Subscription(
            topic=topic,
            topic_key=topic.lower().removesuffix(".*"),
            callback=f"{prefix}{n}",
            lease_seconds=3600,
            verified_at=now,
            expires_at=now + timedelta(hours=1),
        )
        for n in range(count)
    )


def test_each_matching_callback_gets_one_delivery(enqueued, django_capture_on_commit_callbacks):
    subscriptions = [SubscriptionFactory(topic="UN.CEFACT") for _ in range(3)]
    notification = NotificationFactory(topic="UN.CEFACT.TRADE")

    count = spread(notification, django_capture_on_commit_callbacks)

    assert count == 3
    deliveries = Delivery.objects.filter(notification=notification)
    assert sorted(deliveries.values_list("subscription_id", flat=True)) == sorted(s.pk for s in subscriptions)
    assert all(d.status == Delivery.Status.PENDING and d.attempts == 0 for d in deliveries)
    assert {d.callback for d in deliveries} == {s.callback for s in subscriptions}
    assert sorted(id_ for batch in enqueued for id_ in batch) == sorted(deliveries.values_list("id", flat=True))


def test_spread_marks_the_notification_spread(enqueued, django_capture_on_commit_callbacks):
    notification = NotificationFactory(topic="UN.CEFACT")
    before = timezone.now()
    spread(notification, django_capture_on_commit_callbacks)
    notification.refresh_from_db()
    assert notification.spread_at is not None
    assert notification.spread_at >= before


def test_spread_with_no_subscriber_creates_nothing_and_enqueues_nothing(enqueued, django_capture_on_commit_callbacks):
    notification = NotificationFactory(topic="UN.CEFACT")
    assert spread(notification, django_capture_on_commit_callbacks) == 0
    assert not Delivery.objects.exists()
    assert enqueued == []
    notification.refresh_from_db()
    assert notification.spread_at is not None


def test_subscriptions_at_every_matching_level_each_receive(enqueued, django_capture_on_commit_callbacks):
    matching = [
        SubscriptionFactory(topic="UN"),
        SubscriptionFactory(topic="UN.CEFACT.*"),
        SubscriptionFactory(topic="un.cefact.trade"),
        SubscriptionFactory(topic="UN.CEFACT.TRADE.CO.CREATED"),
    ]
    notification = NotificationFactory(topic="UN.CEFACT.TRADE.CO.created")
    assert spread(notification, django_capture_on_commit_callbacks) == 4
    assert set(Delivery.objects.values_list("subscription_id", flat=True)) == {s.pk for s in matching}


def test_non_matching_subscriptions_get_no_delivery(enqueued, django_capture_on_commit_callbacks):
    wanted = SubscriptionFactory(topic="UN.CEFACT")
    SubscriptionFactory(topic="UN.CEFACTX")
    SubscriptionFactory(topic="UN.CEFACT.TRADE.CO")  # deeper than the published topic
    SubscriptionFactory(topic="UN.OTHER")
    SubscriptionFactory(topic="https://publisher.example/UN.CEFACT.TRADE")
    notification = NotificationFactory(topic="UN.CEFACT.TRADE")
    assert spread(notification, django_capture_on_commit_callbacks) == 1
    assert list(Delivery.objects.values_list("subscription_id", flat=True)) == [wanted.pk]


def test_url_topic_reaches_only_its_exact_subscribers(enqueued, django_capture_on_commit_callbacks):
    wanted = SubscriptionFactory(topic="https://publisher.example/Feed")
    SubscriptionFactory(topic="https://publisher.example/feed")
    SubscriptionFactory(topic="https://publisher.example/Feed/more")
    notification = NotificationFactory(topic="https://publisher.example/Feed")
    assert spread(notification, django_capture_on_commit_callbacks) == 1
    assert list(Delivery.objects.values_list("subscription_id", flat=True)) == [wanted.pk]


def test_callback_subscribed_at_two_levels_gets_one_delivery_for_the_most_specific_subscription(
    enqueued, django_capture_on_commit_callbacks
):
    callback = "https://sub.example/both"
    SubscriptionFactory(topic="UN.*", callback=callback, secret="broad")
    specific = SubscriptionFactory(topic="UN.CEFACT.TRADE", callback=callback, secret="specific")
    SubscriptionFactory(topic="UN.CEFACT", callback=callback, secret="middle")
    notification = NotificationFactory(topic="UN.CEFACT.TRADE")

    assert spread(notification, django_capture_on_commit_callbacks) == 1

    only = Delivery.objects.get()
    assert only.subscription_id == specific.pk
    assert only.callback == callback


def test_most_specific_subscription_wins_whatever_the_creation_order(enqueued, django_capture_on_commit_callbacks):
    callback = "https://sub.example/both"
    specific = SubscriptionFactory(topic="UN.CEFACT", callback=callback)
    SubscriptionFactory(topic="UN", callback=callback)
    notification = NotificationFactory(topic="UN.CEFACT.TRADE")
    spread(notification, django_capture_on_commit_callbacks)
    assert Delivery.objects.get().subscription_id == specific.pk


def test_expired_subscription_gets_no_delivery(enqueued, django_capture_on_commit_callbacks):
    live = SubscriptionFactory(topic="UN.CEFACT")
    SubscriptionFactory(topic="UN.CEFACT", expired=True)
    SubscriptionFactory(topic="UN.CEFACT", expires_at=timezone.now() - timedelta(seconds=1))
    notification = NotificationFactory(topic="UN.CEFACT")
    assert spread(notification, django_capture_on_commit_callbacks) == 1
    assert list(Delivery.objects.values_list("subscription_id", flat=True)) == [live.pk]


def test_expired_specific_subscription_leaves_the_live_broader_one_to_receive(
    enqueued, django_capture_on_commit_callbacks
):
    callback = "https://sub.example/both"
    broad = SubscriptionFactory(topic="UN", callback=callback)
    SubscriptionFactory(topic="UN.CEFACT", callback=callback, expired=True)
    notification = NotificationFactory(topic="UN.CEFACT")
    assert spread(notification, django_capture_on_commit_callbacks) == 1
    assert Delivery.objects.get().subscription_id == broad.pk


def test_paused_subscription_in_its_cool_down_gets_a_parked_delivery(enqueued, django_capture_on_commit_callbacks):
    resume_after = timezone.now() + timedelta(minutes=5)
    SubscriptionFactory(topic="UN.CEFACT", state=Subscription.State.PAUSED, resume_after=resume_after)
    notification = NotificationFactory(topic="UN.CEFACT")
    assert spread(notification, django_capture_on_commit_callbacks) == 0
    parked = Delivery.objects.get()
    assert parked.status == Delivery.Status.PENDING
    assert parked.due_at == resume_after
    assert enqueued == []  # no message: hub.enqueue_due sends it at the probe time


def test_paused_subscription_past_its_cool_down_gets_a_delivery_to_probe(enqueued, django_capture_on_commit_callbacks):
    resume_after = timezone.now() - timedelta(seconds=1)
    SubscriptionFactory(topic="UN.CEFACT", state=Subscription.State.PAUSED, resume_after=resume_after)
    notification = NotificationFactory(topic="UN.CEFACT")
    assert spread(notification, django_capture_on_commit_callbacks) == 1
    assert enqueued == [[Delivery.objects.get().pk]]


def test_spreading_twice_creates_no_second_delivery(enqueued, django_capture_on_commit_callbacks):
    SubscriptionFactory(topic="UN.CEFACT")
    SubscriptionFactory(topic="UN")
    notification = NotificationFactory(topic="UN.CEFACT")
    assert spread(notification, django_capture_on_commit_callbacks) == 2
    assert spread(notification, django_capture_on_commit_callbacks) == 0
    assert Delivery.objects.count() == 2
    assert len(enqueued) == 1


def test_spread_rerun_after_a_crash_creates_no_second_row_and_reenqueues_only_pending(
    enqueued, django_capture_on_commit_callbacks
):
    # given a spread that created its deliveries but died before recording spread_at
    subscriptions = [SubscriptionFactory(topic="UN.CEFACT") for _ in range(3)]
    notification = NotificationFactory(topic="UN.CEFACT")
    spread(notification, django_capture_on_commit_callbacks)
    Notification.objects.filter(pk=notification.pk).update(spread_at=None)
    done = Delivery.objects.get(subscription=subscriptions[0])
    Delivery.objects.filter(pk=done.pk).update(status=Delivery.Status.DELIVERED)
    enqueued.clear()

    # when it runs again
    count = spread(notification, django_capture_on_commit_callbacks)

    # then no row is added and only the still-pending deliveries go out again
    assert Delivery.objects.count() == 3
    assert count == 2
    pending = set(Delivery.objects.filter(status=Delivery.Status.PENDING).values_list("id", flat=True))
    assert {id_ for batch in enqueued for id_ in batch} == pending


def test_spread_of_an_unknown_notification_does_nothing(enqueued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        assert services.notification_spread(notification_id=999_999) == 0
    assert enqueued == []


def test_deliveries_are_enqueued_only_after_commit(enqueued, django_capture_on_commit_callbacks):
    SubscriptionFactory(topic="UN.CEFACT")
    notification = NotificationFactory(topic="UN.CEFACT")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.notification_spread(notification_id=notification.pk)
    assert enqueued == []
    for callback in callbacks:
        callback()
    assert enqueued == [list(Delivery.objects.values_list("id", flat=True))]


def test_spread_batches_large_fan_out(enqueued, django_capture_on_commit_callbacks):
    count = queueing.SPREAD_BATCH + 7
    subscriptions_bulk(count)
    notification = NotificationFactory(topic="UN.CEFACT.TRADE")

    assert spread(notification, django_capture_on_commit_callbacks) == count

    assert Delivery.objects.filter(notification=notification).count() == count
    # created in batches of SPREAD_BATCH, sent together once all exist (no delivery takes the CPU from the spread)
    assert [len(batch) for batch in enqueued] == [count]
    assert len({id_ for batch in enqueued for id_ in batch}) == count


def test_a_spread_larger_than_it_holds_sends_as_it_goes(
    enqueued, django_capture_on_commit_callbacks, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(publishing, "SPREAD_HOLD", queueing.SPREAD_BATCH)
    count = 2 * queueing.SPREAD_BATCH + 7
    subscriptions_bulk(count)
    notification = NotificationFactory(topic="UN.CEFACT.TRADE")
    assert spread(notification, django_capture_on_commit_callbacks) == count
    assert [len(batch) for batch in enqueued] == [queueing.SPREAD_BATCH, queueing.SPREAD_BATCH, 7]
    assert len({id_ for batch in enqueued for id_ in batch}) == count


def _spread_queries(count, django_capture_on_commit_callbacks):
    subscriptions_bulk(count, prefix=f"https://sub{count}.example/")
    notification = NotificationFactory(topic="UN.CEFACT.TRADE")
    with CaptureQueriesContext(connection) as queries:
        assert spread(notification, django_capture_on_commit_callbacks) == count
    Subscription.objects.all().delete()
    return [query["sql"] for query in queries.captured_queries]


def test_spread_query_count_does_not_grow_with_subscribers(enqueued, django_capture_on_commit_callbacks):
    few = _spread_queries(10, django_capture_on_commit_callbacks)
    many = _spread_queries(300, django_capture_on_commit_callbacks)

    def not_inserts(queries):
        return [q for q in queries if not q.lstrip().upper().startswith("INSERT")]

    assert len(not_inserts(many)) == len(not_inserts(few))
    if connection.vendor == "postgresql":
        assert len(many) == len(few)
    else:
        # SQLite caps bound parameters per statement, so Django splits one bulk insert
        # into several by row width; the number depends on that cap, not on the queries spread makes.
        rows_per_insert = connection.ops.bulk_batch_size(
            [f for f in Delivery._meta.concrete_fields if not f.primary_key], [None] * 300
        )
        assert len(many) - len(not_inserts(many)) == -(-300 // rows_per_insert)


# notification, matching subscriptions, savepoint, bulk insert, delivery ids, release, spread_at;
# SQLite adds up to three inserts for 300 rows (see above).
SPREAD_QUERY_BUDGET = 10


@pytest.mark.parametrize("subscribers", [10, 300])
def test_spread_uses_a_bounded_number_of_queries(
    subscribers, enqueued, django_assert_max_num_queries, django_capture_on_commit_callbacks
):
    subscriptions_bulk(subscribers)
    notification = NotificationFactory(topic="UN.CEFACT.TRADE")
    budget = 7 if connection.vendor == "postgresql" else SPREAD_QUERY_BUDGET
    with django_assert_max_num_queries(budget):
        assert spread(notification, django_capture_on_commit_callbacks) == subscribers
