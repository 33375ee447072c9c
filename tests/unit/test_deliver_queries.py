"""The deliver hot path makes a fixed, small number of queries (no N+1), whatever else is in the database."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from subscriptions import services
from subscriptions.models import Delivery
from tests.support.factories import DeliveryFactory, NotificationFactory, SubscriptionFactory
from tests.support.subscriber import Subscriber

pytestmark = pytest.mark.django_db


def _deliver(delivery_id: int) -> int:
    with CaptureQueriesContext(connection) as queries:
        services.delivery_attempt(delivery_id=delivery_id)
    return len(queries)


def test_a_successful_delivery_makes_at_most_three_queries_and_two_once_the_payload_is_cached(
    subscriber: Subscriber, settings
) -> None:
    # given one notification for many subscribers, and unrelated rows around them
    settings.HUB_CALLBACK_RATE_LIMIT = "off"
    notification = NotificationFactory(topic="q.count")
    deliveries = [
        DeliveryFactory(
            notification=notification,
            subscription=SubscriptionFactory(topic="q.count", callback=subscriber.url(f"/{n}")),
        )
        for n in range(5)
    ]
    DeliveryFactory.create_batch(20)
    # when each is delivered
    counts = [_deliver(d.pk) for d in deliveries]
    # then: the row with its subscription, the payload once per process, and the attempt log with the
    # delivery's outcome in one statement
    assert all(
        status == Delivery.Status.DELIVERED
        for status in Delivery.objects.filter(pk__in=[d.pk for d in deliveries]).values_list("status", flat=True)
    )
    assert counts[0] <= 3, counts
    assert len(set(counts[1:])) == 1 and counts[1] <= 2, counts


def test_query_count_does_not_grow_with_the_number_of_subscriptions_or_attempts(
    subscriber: Subscriber, settings
) -> None:
    settings.HUB_CALLBACK_RATE_LIMIT = "off"
    notification = NotificationFactory(topic="q.growth")
    first = DeliveryFactory(
        notification=notification, subscription=SubscriptionFactory(topic="q.growth", callback=subscriber.url("/a"))
    )
    _deliver(first.pk)
    SubscriptionFactory.create_batch(50, topic="q.growth")
    later = DeliveryFactory(
        notification=notification,
        subscription=SubscriptionFactory(topic="q.growth", callback=subscriber.url("/b")),
        attempts=3,
    )
    assert _deliver(later.pk) <= 2


@pytest.mark.django_db(transaction=True)
def test_the_outcome_commits_asynchronously_and_leaves_the_connection_synchronous(
    subscriber: Subscriber, settings
) -> None:
    # given
    if connection.vendor != "postgresql":
        pytest.skip("asynchronous commit is PostgreSQL's")
    settings.HUB_CALLBACK_RATE_LIMIT = "off"
    first, second = DeliveryFactory.create_batch(2, subscription__callback=subscriber.url("/sync"))
    # when: the outcome statement runs in autocommit, as in the worker
    with CaptureQueriesContext(connection) as queries:
        services.delivery_attempt(delivery_id=first.pk)
    # then: its own transaction only was asynchronous; what the connection commits next (a spread's
    # deliveries, say) waits for the flush as before
    (outcome,) = [q["sql"] for q in queries if q["sql"].startswith("WITH attempt AS")]
    assert "set_config('synchronous_commit', 'off', true)" in outcome
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"
    assert Delivery.objects.get(pk=first.pk).status == Delivery.Status.DELIVERED
    assert Delivery.objects.get(pk=second.pk).status == Delivery.Status.PENDING
