"""Running it for a year, end to end: idempotent publish, replay by time window and retention with a real worker
and real subscribers."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from subscriptions import services
from subscriptions.models import Delivery, DeliveryAttempt, Notification, Subscription
from tests.support.auth import api_client
from tests.support.factories import SubscriptionFactory
from tests.support.subscriber import Subscriber, stays, wait_until
from websubhub.client import verify_signature

pytestmark = pytest.mark.e2e


def _publish(topic: str, content: object, key: str | None = None) -> int:
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    response = api_client().post(
        "/api/notifications/", {"topic": topic, "content": content}, content_type="application/json", **headers
    )
    assert response.status_code == 202, response.content
    return response.json()["id"]


def _delivered(count: int) -> bool:
    return Delivery.objects.filter(status=Delivery.Status.DELIVERED).count() == count


def test_a_retried_publish_with_the_same_key_reaches_the_subscriber_once(hub, subscriber: Subscriber) -> None:
    SubscriptionFactory(topic="orders", callback=subscriber.url("/once"))
    first = _publish("orders.created", {"n": 1}, key="retry-me")
    again = _publish("orders.created", {"n": 1}, key="retry-me")
    assert first == again
    wait_until(lambda: subscriber.deliveries("/once"), what="the delivery")
    assert stays(lambda: len(subscriber.deliveries("/once")) == 1, duration=2.0)
    assert Notification.objects.count() == 1


def test_a_replayed_window_arrives_again_as_new_deliveries_signed_with_the_current_secret(
    hub, subscriber: Subscriber
) -> None:
    # given two notifications delivered, signed with the first secret
    subscription = SubscriptionFactory(topic="orders", callback=subscriber.url("/replayed"), secret="first")
    since = timezone.now() - timedelta(seconds=1)
    bodies = [{"n": 1}, {"n": 2}]
    for content in bodies:
        _publish("orders.created", content)
    wait_until(lambda: _delivered(2), what="the two originals")
    # and a new secret since (a re-subscribe replaces it)
    Subscription.objects.filter(pk=subscription.pk).update(secret="second")
    # when the window is replayed
    response = api_client().post(
        f"/api/subscriptions/{subscription.pk}/replay", {"since": since.isoformat()}, content_type="application/json"
    )
    assert response.status_code == 202 and response.json() == {"replayed": 2}
    # then both arrive again, with new delivery ids, signed with the current secret
    wait_until(lambda: len(subscriber.deliveries("/replayed")) == 4, what="the replays")
    received = subscriber.deliveries("/replayed")
    originals, replays = received[:2], received[2:]
    assert sorted(r.body for r in replays) == sorted(r.body for r in originals)
    assert not {r.headers["X-Hub-Delivery"] for r in replays} & {r.headers["X-Hub-Delivery"] for r in originals}
    assert all(verify_signature("first", r.body, r.headers["X-Hub-Signature"]) for r in originals)
    assert all(verify_signature("second", r.body, r.headers["X-Hub-Signature"]) for r in replays)
    wait_until(lambda: _delivered(4), what="the replays settled")
    assert sorted(Delivery.objects.values_list("replay", flat=True)) == [0, 0, 1, 1]


def test_a_purge_runs_beside_live_deliveries_and_leaves_pending_ones(hub, subscriber: Subscriber) -> None:
    # given 3,000 settled deliveries of 60 notifications published 40 days ago, and one still pending
    # (in one transaction: a purge running meanwhile must never see the old notifications without their
    # deliveries; the tests' workers run no purge of their own, HUB_RETENTION_DAYS=0 in WORKER_ENV)
    with transaction.atomic():
        old_subscription = SubscriptionFactory(topic="archive", callback="https://archive.example/cb")
        old = Notification.objects.bulk_create(
            Notification(topic="archive", content=b"{}", content_type="application/json", spread_at=timezone.now())
            for _ in range(61)
        )
        Notification.objects.filter(pk__in=[n.pk for n in old]).update(created_at=timezone.now() - timedelta(days=40))
        callbacks = [f"https://archive.example/cb/{n}" for n in range(50)]
        rows = Delivery.objects.bulk_create(
            Delivery(notification=n, callback=c, status=Delivery.Status.DELIVERED) for n in old[:60] for c in callbacks
        )
        DeliveryAttempt.objects.bulk_create(
            DeliveryAttempt(delivery=d, number=1, started_at=timezone.now() - timedelta(days=40), duration_ms=3)
            for d in rows
        )
        kept = Delivery.objects.create(
            notification=old[60], subscription=old_subscription, callback=old_subscription.callback,
            due_at=timezone.now() + timedelta(days=1),
        )  # fmt: skip
    SubscriptionFactory(topic="live", callback=subscriber.url("/live"))
    # when the purge runs, in small batches, while 20 notifications are published and delivered
    counts: list[services.PurgeCounts] = []

    def purge() -> None:
        try:
            counts.append(services.retention_purge(batch=100))
        finally:
            connection.close()

    purger = threading.Thread(target=purge)
    purger.start()
    for n in range(20):
        _publish("live", {"n": n})
    purger.join(60)
    # then every live notification arrives, the old settled ones are gone, the pending one stays
    wait_until(lambda: len(subscriber.deliveries("/live")) == 20, what="the live deliveries", timeout=30)
    assert counts[0].deliveries == 3000 and counts[0].notifications == 60
    assert not DeliveryAttempt.objects.filter(delivery__notification__in=old[:60]).exists()
    assert Delivery.objects.filter(pk=kept.pk, status=Delivery.Status.PENDING).exists()
    assert Notification.objects.filter(pk=old[60].pk).exists()
