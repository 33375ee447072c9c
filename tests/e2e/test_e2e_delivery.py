"""Publishing and delivering end to end: API and publish ping, spread, signed delivery, retries, 410, expiry."""

import hashlib
import hmac
import json
import uuid
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.test import Client
from django.utils import timezone

from subscriptions.models import Delivery, Notification, Subscription
from tests.support.auth import api_client
from tests.support.factories import SubscriptionFactory
from tests.support.subscriber import Subscriber, stays, wait_until

pytestmark = pytest.mark.e2e

HUB_URL = "http://hub.test/hub"  # the worker's HUB_URL (tests/support/processes.py)


def _publish(client: Client, topic: str, content: object) -> int:
    response = client.post("/api/notifications/", {"topic": topic, "content": content}, content_type="application/json")
    assert response.status_code == 202, response.content
    return response.json()["id"]


def _settled(notification_id: int) -> bool:
    return not Delivery.objects.filter(notification_id=notification_id, status=Delivery.Status.PENDING).exists()


def test_published_json_reaches_the_subscriber_signed_with_exact_body_and_headers(hub, subscriber: Subscriber) -> None:
    # given
    client = api_client()
    callback = subscriber.url("/hook?token=abc")
    SubscriptionFactory(topic="UN.CEFACT.*", callback=callback, secret="secrat")
    content = {"document": "CO-1", "amount": 12.5, "lines": [1, 2, 3], "note": "é"}
    # when
    notification_id = _publish(client, "UN.CEFACT.TRADE.CO", content)
    # then
    (got,) = wait_until(lambda: subscriber.deliveries("/hook"), what="the delivery")
    expected_body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
    assert got.body == expected_body
    assert got.query == {"token": ["abc"]}
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["Link"] == f'<{HUB_URL}>; rel="hub", <UN.CEFACT.TRADE.CO>; rel="self"'
    expected_signature = hmac.new(b"secrat", expected_body, hashlib.sha256).hexdigest()
    assert got.headers["X-Hub-Signature"] == f"sha256={expected_signature}"
    delivery = wait_until(lambda: Delivery.objects.filter(status=Delivery.Status.DELIVERED).first())
    assert got.headers["X-Hub-Delivery"] == str(delivery.uuid)
    assert delivery.attempts == 1 and delivery.last_status_code == 204
    counts = client.get(f"/api/notifications/{notification_id}/").json()["deliveries"]
    assert counts == {"pending": 0, "delivered": 1, "failed": 0, "cancelled": 0}


def test_delivery_without_a_secret_has_no_signature(hub, subscriber: Subscriber) -> None:
    SubscriptionFactory(topic="orders", callback=subscriber.url("/plain"))
    _publish(api_client(), "orders.created", None)
    (got,) = wait_until(lambda: subscriber.deliveries("/plain"))
    assert got.body == b"null"
    assert "X-Hub-Signature" not in got.headers


def test_publish_ping_fetches_the_topic_and_delivers_its_bytes_and_content_type(hub, subscriber: Subscriber) -> None:
    # given a topic URL served by the publisher, and a subscriber to it
    feed = b'<?xml version="1.0"?>\n<feed xmlns="http://www.w3.org/2005/Atom"><title>\xc3\xa9</title></feed>\n'
    subscriber.content["/feed"] = (feed, "application/atom+xml; charset=utf-8")
    topic = subscriber.url("/feed")
    SubscriptionFactory(topic=topic, callback=subscriber.url("/reader"), secret="k")
    # when the publisher pings the hub, naming the topic twice (hub.url and hub.topic)
    body = urlencode([("hub.mode", "publish"), ("hub.url", topic), ("hub.topic", topic)])
    response = api_client().post("/hub", body, content_type="application/x-www-form-urlencoded")
    # then
    assert response.status_code == 202, response.content
    (got,) = wait_until(lambda: subscriber.deliveries("/reader"))
    assert got.body == feed
    assert got.headers["Content-Type"] == "application/atom+xml; charset=utf-8"
    assert got.headers["Link"] == f'<{HUB_URL}>; rel="hub", <{topic}>; rel="self"'
    assert got.headers["X-Hub-Signature"] == "sha256=" + hmac.new(b"k", feed, hashlib.sha256).hexdigest()
    assert Notification.objects.count() == 1


def test_url_topics_match_exactly(hub, subscriber: Subscriber) -> None:
    SubscriptionFactory(topic="https://example.com/feed", callback=subscriber.url("/exact"))
    SubscriptionFactory(topic="https://example.com/feed/other", callback=subscriber.url("/other"))
    notification_id = _publish(api_client(), "https://example.com/feed", {"a": 1})
    wait_until(lambda: subscriber.deliveries("/exact"))
    wait_until(lambda: _settled(notification_id))
    assert subscriber.deliveries("/other") == []


def test_prefix_subscriptions_deliver_once_per_callback_with_the_most_specific_secret(
    hub, subscriber: Subscriber
) -> None:
    # given one callback subscribed at two matching levels, and look-alike topics
    both = subscriber.url("/both")
    SubscriptionFactory(topic="UN.CEFACT", callback=both, secret="broad")
    SubscriptionFactory(topic="un.cefact.trade.*", callback=both, secret="narrow")
    SubscriptionFactory(topic="UN.CEFACTX", callback=subscriber.url("/lookalike"))
    SubscriptionFactory(topic="UN.CEFACT.TRADE.CO.created.extra", callback=subscriber.url("/deeper"))
    SubscriptionFactory(topic="un", callback=subscriber.url("/root"))
    # when
    notification_id = _publish(api_client(), "UN.CEFACT.TRADE.CO.created", {"x": 1})
    # then
    wait_until(lambda: _settled(notification_id) and len(subscriber.deliveries()) >= 2)
    assert stays(lambda: len(subscriber.deliveries("/both")) == 1, duration=1.0)
    (got,) = subscriber.deliveries("/both")
    assert got.headers["X-Hub-Signature"] == "sha256=" + hmac.new(b"narrow", got.body, hashlib.sha256).hexdigest()
    assert len(subscriber.deliveries("/root")) == 1
    assert subscriber.deliveries("/lookalike") == []
    assert subscriber.deliveries("/deeper") == []
    assert Delivery.objects.filter(notification_id=notification_id).count() == 2


def test_failed_delivery_is_retried_until_it_succeeds(hub, subscriber: Subscriber) -> None:
    subscriber.post_statuses["/flaky"] = [500, 503]
    SubscriptionFactory(topic="flaky", callback=subscriber.url("/flaky"))
    _publish(api_client(), "flaky", {"n": 1})
    delivery = wait_until(lambda: Delivery.objects.filter(status=Delivery.Status.DELIVERED).first(), timeout=30)
    assert delivery.attempts == 3
    received = subscriber.deliveries("/flaky")
    assert len(received) == 3
    # Every attempt carries the same delivery id and the same bytes.
    assert len({r.headers["X-Hub-Delivery"] for r in received}) == 1
    assert len({r.body for r in received}) == 1


def test_delivery_that_keeps_failing_ends_failed_and_keeps_the_subscription(hub, subscriber: Subscriber) -> None:
    subscriber.post_statuses["/down"] = [500] * 10
    subscription = SubscriptionFactory(topic="down", callback=subscriber.url("/down"))
    _publish(api_client(), "down", {"n": 1})
    delivery = wait_until(lambda: Delivery.objects.filter(status=Delivery.Status.FAILED).first(), timeout=40)
    # The worker allows 3 retries: 4 attempts in all.
    assert delivery.attempts == 4
    assert delivery.last_status_code == 500
    assert "HTTP 500" in delivery.last_error
    assert len(subscriber.deliveries("/down")) == 4
    assert Subscription.objects.filter(pk=subscription.pk).exists()


def test_redirect_answer_is_a_failure_and_is_not_followed(hub, subscriber: Subscriber) -> None:
    subscriber.post_statuses["/moved"] = [302, 204]
    SubscriptionFactory(topic="moved", callback=subscriber.url("/moved"))
    _publish(api_client(), "moved", {"n": 1})
    delivery = wait_until(lambda: Delivery.objects.filter(status=Delivery.Status.DELIVERED).first(), timeout=30)
    assert delivery.attempts == 2
    assert [r.path for r in subscriber.requests()] == ["/moved", "/moved"]


def test_gone_answer_ends_the_subscription(hub, subscriber: Subscriber) -> None:
    subscriber.post_statuses["/gone"] = [410]
    SubscriptionFactory(topic="gone", callback=subscriber.url("/gone"))
    _publish(api_client(), "gone", {"n": 1})
    wait_until(lambda: not Subscription.objects.exists(), what="the subscription to end")
    delivery = Delivery.objects.get()
    assert delivery.status == Delivery.Status.CANCELLED
    assert delivery.last_status_code == 410
    # Later notifications reach nobody.
    second = _publish(api_client(), "gone", {"n": 2})
    wait_until(lambda: Notification.objects.get(pk=second).spread_at)
    assert len(subscriber.deliveries("/gone")) == 1


def test_expired_subscription_receives_nothing(hub, subscriber: Subscriber) -> None:
    subscription = SubscriptionFactory(topic="leased", callback=subscriber.url("/expired"))
    Subscription.objects.filter(pk=subscription.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    SubscriptionFactory(topic="leased", callback=subscriber.url("/live"))
    notification_id = _publish(api_client(), "leased.event", {"n": 1})
    wait_until(lambda: subscriber.deliveries("/live"))
    wait_until(lambda: Notification.objects.get(pk=notification_id).spread_at)
    assert subscriber.deliveries("/expired") == []


def test_unsubscribed_callback_stops_receiving(hub, subscriber: Subscriber) -> None:
    client = api_client()
    callback = subscriber.url("/leaving")
    SubscriptionFactory(topic="news", callback=callback)
    _publish(client, "news", {"n": 1})
    wait_until(lambda: subscriber.deliveries("/leaving"))
    body = urlencode({"hub.mode": "unsubscribe", "hub.topic": "news", "hub.callback": callback})
    assert client.post("/hub", body, content_type="application/x-www-form-urlencoded").status_code == 202
    wait_until(lambda: not Subscription.objects.exists(), what="the unsubscribe to be verified")
    second = _publish(client, "news", {"n": 2})
    wait_until(lambda: Notification.objects.get(pk=second).spread_at)
    assert len(subscriber.deliveries("/leaving")) == 1


def test_fan_out_reaches_every_subscriber_once(hub, subscriber: Subscriber) -> None:
    for n in range(60):
        SubscriptionFactory(topic="fan.out", callback=subscriber.url(f"/s{n}"))
    notification_id = _publish(api_client(), "fan.out.event", {"n": 1})
    wait_until(lambda: len(subscriber.deliveries()) >= 60, what="60 deliveries")
    wait_until(lambda: _settled(notification_id))
    paths = sorted(r.path for r in subscriber.deliveries())
    assert paths == sorted(f"/s{n}" for n in range(60))
    ids = {r.headers["X-Hub-Delivery"] for r in subscriber.deliveries()}
    assert len(ids) == 60 and all(uuid.UUID(i) for i in ids)


def test_notification_never_spread_is_picked_up_by_the_sweep(hub, subscriber: Subscriber) -> None:
    # given a notification committed while the broker lost its spread message
    SubscriptionFactory(topic="swept", callback=subscriber.url("/swept"))
    notification = Notification.objects.create(topic="swept", content=b'{"late":true}', content_type="application/json")
    Notification.objects.filter(pk=notification.pk).update(created_at=timezone.now() - timedelta(seconds=10))
    # then beat's sweep sends it to spread and it is delivered
    (got,) = wait_until(lambda: subscriber.deliveries("/swept"), timeout=20)
    assert got.body == b'{"late":true}'
