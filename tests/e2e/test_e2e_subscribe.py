"""Subscribing end to end: the /hub endpoint, a real worker verifying intent with a real subscriber."""

from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.test import Client

from subscriptions.models import Subscription, SubscriptionRequest
from tests.support.auth import api_client
from tests.support.subscriber import Subscriber, Verification, wait_until

pytestmark = pytest.mark.e2e

TOPIC = "UN.CEFACT.TRADE"


def _post_hub(client: Client, **fields: str) -> object:
    body = urlencode({f"hub.{k}": v for k, v in fields.items()})
    return client.post("/hub", body, content_type="application/x-www-form-urlencoded")


def _request_done(pk: int) -> SubscriptionRequest | None:
    request = SubscriptionRequest.objects.get(pk=pk)
    return request if request.state != SubscriptionRequest.State.PENDING else None


def _subscribe(client: Client, topic: str, callback: str, **extra: str) -> SubscriptionRequest:
    response = _post_hub(client, mode="subscribe", topic=topic, callback=callback, **extra)
    assert response.status_code == 202, response.content
    pk = SubscriptionRequest.objects.latest("pk").pk
    return wait_until(lambda: _request_done(pk), what=f"verification of request {pk}")


def test_subscribe_is_verified_with_the_callback_and_creates_the_subscription(hub, subscriber: Subscriber) -> None:
    # given
    client = api_client()
    callback = subscriber.url("/cb?owner=alice&x=1")
    # when
    request = _subscribe(client, TOPIC, callback, lease_seconds="7200", secret="s3cret")
    # then
    assert request.state == SubscriptionRequest.State.VERIFIED
    (check,) = subscriber.verifications("/cb")
    assert check.query["owner"] == ["alice"] and check.query["x"] == ["1"]
    assert check.param("hub.mode") == "subscribe"
    assert check.param("hub.topic") == TOPIC
    assert check.param("hub.lease_seconds") == "7200"
    assert len(check.param("hub.challenge") or "") >= 32
    subscription = Subscription.objects.get()
    assert subscription.callback == callback
    assert subscription.topic == TOPIC
    assert subscription.secret == "s3cret"
    assert subscription.lease_seconds == 7200
    assert subscription.expires_at == subscription.verified_at + timedelta(seconds=7200)


def test_each_verification_uses_a_new_challenge(hub, subscriber: Subscriber) -> None:
    client = api_client()
    _subscribe(client, TOPIC, subscriber.url("/cb"))
    _subscribe(client, TOPIC, subscriber.url("/cb"))
    challenges = [r.param("hub.challenge") for r in subscriber.verifications("/cb")]
    assert len(challenges) == 2 and challenges[0] != challenges[1]


@pytest.mark.parametrize(
    "answer",
    [
        Verification(body="not the challenge"),
        Verification(status=404),
        Verification(status=500),
        Verification(status=302, location="http://127.0.0.1:1/elsewhere"),
    ],
    ids=["wrong-body", "404", "500", "302"],
)
def test_failed_verification_leaves_the_existing_subscription_exactly_as_it_was(
    hub, subscriber: Subscriber, answer: Verification
) -> None:
    # given a verified subscription
    client = api_client()
    callback = subscriber.url("/cb")
    _subscribe(client, TOPIC, callback, lease_seconds="7200", secret="old-secret")
    before = Subscription.objects.values().get()
    # when a renewal fails verification
    subscriber.verification["/cb"] = answer
    request = _subscribe(client, TOPIC, callback, lease_seconds="90000", secret="new-secret")
    # then
    assert request.state == SubscriptionRequest.State.FAILED
    assert request.reason
    assert Subscription.objects.values().get() == before


@pytest.mark.parametrize("status", [404, 500, 302])
def test_failed_verification_of_a_new_pair_creates_nothing(hub, subscriber: Subscriber, status: int) -> None:
    subscriber.verification["/cb"] = Verification(status=status, location="http://127.0.0.1:1/")
    request = _subscribe(api_client(), TOPIC, subscriber.url("/cb"))
    assert request.state == SubscriptionRequest.State.FAILED
    assert request.response_status == status
    assert not Subscription.objects.exists()
    # A redirect is never followed: the hub asked once.
    assert len(subscriber.requests()) == 1


def test_resubscribing_replaces_lease_and_secret_without_a_second_subscription(hub, subscriber: Subscriber) -> None:
    client = api_client()
    callback = subscriber.url("/cb")
    _subscribe(client, TOPIC, callback, lease_seconds="7200", secret="first")
    first = Subscription.objects.get()
    # Same pair, spelled in another case: the dotted topic matches case-insensitively.
    _subscribe(client, TOPIC.lower(), callback, lease_seconds="9000")
    second = Subscription.objects.get()
    assert second.pk == first.pk
    assert second.lease_seconds == 9000
    assert second.secret == ""
    assert second.expires_at > first.expires_at


def test_unsubscribe_is_verified_then_removes_the_subscription(hub, subscriber: Subscriber) -> None:
    client = api_client()
    callback = subscriber.url("/cb")
    _subscribe(client, TOPIC, callback)
    response = _post_hub(client, mode="unsubscribe", topic=TOPIC, callback=callback)
    assert response.status_code == 202
    pk = SubscriptionRequest.objects.latest("pk").pk
    request = wait_until(lambda: _request_done(pk), what="unsubscribe verification")
    assert request.state == SubscriptionRequest.State.VERIFIED
    check = subscriber.verifications("/cb")[-1]
    assert check.param("hub.mode") == "unsubscribe"
    assert check.param("hub.lease_seconds") is None
    assert not Subscription.objects.exists()


def test_unsubscribe_that_fails_verification_keeps_the_subscription(hub, subscriber: Subscriber) -> None:
    client = api_client()
    callback = subscriber.url("/cb")
    _subscribe(client, TOPIC, callback)
    subscriber.verification["/cb"] = Verification(status=404)
    _post_hub(client, mode="unsubscribe", topic=TOPIC, callback=callback)
    pk = SubscriptionRequest.objects.latest("pk").pk
    assert wait_until(lambda: _request_done(pk)).state == SubscriptionRequest.State.FAILED
    assert Subscription.objects.count() == 1


def test_lease_outside_the_bounds_is_clamped(hub, subscriber: Subscriber, settings) -> None:
    settings.HUB_LEASE_SECONDS_MAX = 10_000
    _subscribe(api_client(), TOPIC, subscriber.url("/cb"), lease_seconds="999999999")
    assert subscriber.verifications("/cb")[0].param("hub.lease_seconds") == "10000"
    assert Subscription.objects.get().lease_seconds == 10_000


def test_denied_topic_is_accepted_then_denied_with_a_reason(hub, subscriber: Subscriber) -> None:
    request = _subscribe(api_client(), "https://denied.example/feed", subscriber.url("/cb"))
    assert request.state == SubscriptionRequest.State.DENIED
    (denial,) = subscriber.verifications("/cb")
    assert denial.param("hub.mode") == "denied"
    assert denial.param("hub.topic") == "https://denied.example/feed"
    assert denial.param("hub.reason")
    assert not Subscription.objects.exists()


def test_rest_subscribe_uses_the_same_verification(hub, subscriber: Subscriber) -> None:
    client = api_client()
    response = client.post(
        "/api/subscriptions/",
        {"topic": TOPIC, "callback": subscriber.url("/rest"), "lease_seconds": 7200, "secret": "k"},
        content_type="application/json",
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["state"] == "pending" and "secret" not in body
    request = wait_until(lambda: _request_done(body["id"]))
    assert request.state == SubscriptionRequest.State.VERIFIED
    listed = client.get("/api/subscriptions/", {"callback": subscriber.url("/rest")}).json()
    assert listed["count"] == 1
    assert listed["results"][0]["has_secret"] is True
    assert client.get(f"/api/subscription-requests/{body['id']}/").json()["state"] == "verified"


def test_expired_subscription_is_removed_by_beat(hub, subscriber: Subscriber) -> None:
    _subscribe(api_client(), TOPIC, subscriber.url("/cb"))
    Subscription.objects.update(expires_at=Subscription.objects.get().verified_at)
    wait_until(lambda: not Subscription.objects.exists(), timeout=15, what="beat to remove the expired subscription")


def test_request_whose_verification_message_was_lost_is_verified_by_the_sweep(hub, subscriber: Subscriber) -> None:
    # given a committed request whose verify task never reached the broker
    request = SubscriptionRequest.objects.create(
        mode="subscribe", topic=TOPIC, topic_key=TOPIC.lower(), callback=subscriber.url("/lost"), lease_seconds=3600
    )
    SubscriptionRequest.objects.filter(pk=request.pk).update(created_at=request.created_at - timedelta(seconds=10))
    # then beat's sweep sends it to verification
    done = wait_until(lambda: _request_done(request.pk), timeout=20, what="the sweep to verify the request")
    assert done.state == SubscriptionRequest.State.VERIFIED
    assert Subscription.objects.get().callback == subscriber.url("/lost")
