"""Operational events end to end: an operator's callback subscribed to hub.events hears a real worker pause a
failing subscription and resume it after the subscriber recovers. Real worker, real Redis, real subscribers."""

import json
from typing import Any

import pytest

from subscriptions.models import Notification, Subscription
from tests.support.auth import api_client
from tests.support.factories import SubscriptionFactory
from tests.support.processes import WORKER_ENV
from tests.support.subscriber import Subscriber, wait_until

pytestmark = pytest.mark.e2e

SECRET = "s3cret-of-the-sick-one"


def _publish(topic: str, content: object) -> int:
    response = api_client().post(
        "/api/notifications/", {"topic": topic, "content": content}, content_type="application/json"
    )
    assert response.status_code == 202, response.content
    return response.json()["id"]


def _heard(subscriber: Subscriber, event: str) -> list[dict[str, Any]]:
    """The distinct events of one kind the operator's callback received (a repeated delivery counted once)."""
    seen: dict[str, dict[str, Any]] = {}
    for received in subscriber.deliveries("/ops"):
        body = json.loads(received.body)
        if body["event"] == event:
            seen[received.headers["X-Hub-Delivery"]] = body
    return list(seen.values())


def test_an_operator_subscribed_to_hub_events_hears_the_pause_and_the_resume(hub, subscriber: Subscriber) -> None:
    # given an operator's callback subscribed to hub.events through the API (the worker verifies it)
    wanted = {"topic": "hub.events", "callback": subscriber.url("/ops")}
    response = api_client(publish=False).post("/api/subscriptions/", wanted, content_type="application/json")
    assert response.status_code == 202, response.content
    wait_until(lambda: Subscription.objects.filter(topic_key="hub.events").exists(), what="the operator's subscription")
    # and a subscription with a secret whose callback fails every delivery (the worker pauses at 6 failures)
    subscriber.post_statuses["/sick"] = [500] * 1000
    sick = SubscriptionFactory(topic="sick", callback=subscriber.url("/sick?tenant=7"), secret=SECRET)
    for n in range(6):
        _publish("sick", {"n": n})
    # when the breaker pauses it
    wait_until(
        lambda: Subscription.objects.filter(pk=sick.pk, state=Subscription.State.PAUSED).exists(),
        timeout=30,
        what="the subscription to pause",
    )
    # then the operator hears it: which subscription, why, how many failures
    (paused,) = wait_until(lambda: _heard(subscriber, "subscription.paused"), timeout=30, what="the paused event")
    assert paused["subscription"] == {"id": sick.pk, "topic": "sick", "callback_host": "127.0.0.1"}
    threshold = int(WORKER_ENV["HUB_CALLBACK_FAILURE_PAUSE"])
    assert paused["reason"].startswith(f"{threshold} consecutive failed delivery attempts; last: HTTP 500")
    assert paused["counts"]["consecutive_failures"] >= threshold
    assert paused["times"]["probe_after"] is not None

    # when the subscriber answers again (a notification published now waits for the probe)
    _publish("sick", {"n": 6})
    subscriber.post_statuses["/sick"] = []
    # then a probe resumes the subscription, and the operator hears that too, after the pause
    (resumed,) = wait_until(lambda: _heard(subscriber, "subscription.resumed"), timeout=60, what="the resumed event")
    assert resumed["subscription"]["id"] == sick.pk
    assert resumed["reason"] == "the probe was delivered"
    assert resumed["occurred_at"] > paused["occurred_at"]
    assert resumed["times"]["paused_at"] == paused["times"]["paused_at"]
    assert Subscription.objects.get(pk=sick.pk).state == Subscription.State.ACTIVE
    # and one event per pause; each an ordinary notification on its own topic (unsigned: the operator gave no secret)
    assert Notification.objects.filter(topic="hub.events.subscription.paused").count() == 1
    for received in subscriber.deliveries("/ops"):
        body = json.loads(received.body)
        assert body["subscription"]["id"] == sick.pk  # never one about the operator's own subscription
        assert f'<hub.events.{body["event"]}>; rel="self"' in received.headers["Link"]
        assert "X-Hub-Signature" not in received.headers
        assert SECRET.encode() not in received.body and b"tenant" not in received.body
