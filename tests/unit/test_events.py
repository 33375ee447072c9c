"""Operational events (issue 12 item 4): what the hub publishes on hub.events.*, when, with what body, and who may
publish or subscribe there. Deliveries and verifications go to a real subscriber server on 127.0.0.1."""

import json
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.utils import timezone

from subscriptions import services, topics
from subscriptions.models import Delivery, Notification, Subscription, SubscriptionRequest
from subscriptions.services import events
from subscriptions.services.events import EventName
from tests.support.auth import api_client
from tests.support.factories import DeliveryFactory, SubscriptionFactory, SubscriptionRequestFactory
from tests.support.subscriber import Subscriber, Verification
from websubhub.queues import TaskName

SECRET = "s3cret-never-shown"


@pytest.fixture
def hub_settings(settings):
    settings.HUB_CALLBACK_RATE_LIMIT = "off"
    settings.HUB_CALLBACK_FAILURE_PAUSE = 2
    settings.HUB_DELIVERY_MAX_RETRIES = 10
    return settings


def published(name: EventName | None = None) -> list[dict[str, Any]]:
    """The bodies of the events stored so far (oldest first), of one kind or all."""
    rows = Notification.objects.filter(topic__startswith=f"{topics.EVENTS_PREFIX}.").order_by("id")
    if name is not None:
        rows = rows.filter(topic=name.topic)
    return [json.loads(bytes(row.content)) for row in rows]


def raw_events() -> list[bytes]:
    return [
        bytes(c) for c in Notification.objects.filter(topic__startswith="hub.events.").values_list("content", flat=True)
    ]


def fail_twice(subscriber: Subscriber, subscription: Subscription) -> None:
    """Two failed attempts (HTTP 500) of two deliveries: the second pauses the subscription (threshold 2)."""
    path = subscription.callback.removeprefix(subscriber.base_url).split("?")[0]
    subscriber.post_statuses[path] = [500] * 100
    for _ in range(2):
        services.delivery_attempt(delivery_id=DeliveryFactory(subscription=subscription).pk)


# --- The topics and the body: pure ----------------------------------------------------------------


def test_every_event_is_published_under_the_reserved_prefix() -> None:
    assert {name.topic for name in EventName} == {
        "hub.events.subscription.paused",
        "hub.events.subscription.resumed",
        "hub.events.subscription.expired",
        "hub.events.subscription.verification_failed",
        "hub.events.delivery.failed",
    }
    assert all(topics.is_events_topic(name.topic) for name in EventName)


@pytest.mark.parametrize(
    ("topic", "reserved"),
    [
        ("hub.events", True),
        ("hub.events.delivery.failed", True),
        ("HUB.Events.Anything", True),
        ("hub.eventsx", False),
        ("hub.event", False),
        ("hub", False),
        ("hub.other", False),
        ("x.hub.events", False),
        ("https://hub.events/feed", False),
        ("hub..events", False),
    ],
)
def test_a_published_topic_is_an_event_topic_by_whole_segments_in_any_case(topic: str, reserved: bool) -> None:
    assert topics.is_events_topic(topic) is reserved


@pytest.mark.parametrize(
    ("subscribed", "receives"),
    [
        ("hub.events", True),
        ("hub.events.*", True),
        ("HUB.EVENTS.subscription", True),
        ("hub.events.delivery.failed", True),
        ("hub", True),
        ("hub.*", True),
        ("hub.eventsx", False),
        ("hub.other", False),
        ("orders", False),
        ("https://example.com/hub.events", False),
    ],
)
def test_a_subscription_receives_events_when_its_key_is_a_prefix_of_or_under_hub_events(
    subscribed: str, receives: bool
) -> None:
    assert topics.key_receives_events(topics.subscription_key(subscribed)) is receives


def test_the_body_names_the_callback_host_only_with_times_in_utc() -> None:
    # given a callback with user info, a path and a query that carries a token
    now = timezone.now()
    body = events.event_body(
        name=EventName.SUBSCRIPTION_PAUSED,
        occurred_at=now,
        subscription_id=7,
        topic="orders",
        callback="https://user:pw@Sub.Example:8443/hooks/7?token=abc",
        reason="why",
        counts={"consecutive_failures": 5},
        times={"paused_at": now, "probe_after": None},
    )
    # then
    assert body == {
        "event": "subscription.paused",
        "occurred_at": now.isoformat().replace("+00:00", "Z"),
        "subscription": {"id": 7, "topic": "orders", "callback_host": "sub.example"},
        "reason": "why",
        "counts": {"consecutive_failures": 5},
        "times": {"paused_at": now.isoformat().replace("+00:00", "Z"), "probe_after": None},
    }
    text = json.dumps(body)
    assert "hooks" not in text and "token" not in text and "pw" not in text


# --- paused and resumed ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_breaker_pausing_a_subscription_publishes_one_paused_event_without_the_secret(
    subscriber: Subscriber, hub_settings
) -> None:
    # given a subscription with a secret whose callback fails
    subscription = SubscriptionFactory(
        topic="orders", callback=subscriber.url("/sick?key=abc"), secret=SECRET, previous_secret=f"old-{SECRET}"
    )
    # when two attempts fail (the threshold), then a probe fails too
    fail_twice(subscriber, subscription)
    Subscription.objects.filter(pk=subscription.pk).update(resume_after=timezone.now() - timedelta(seconds=1))
    services.delivery_attempt(delivery_id=DeliveryFactory(subscription=subscription).pk)
    # then one paused event, for the pause, none for the failed probe
    (event,) = published(EventName.SUBSCRIPTION_PAUSED)
    row = Subscription.objects.get(pk=subscription.pk)
    assert row.state == Subscription.State.PAUSED
    assert event["event"] == "subscription.paused"
    assert event["subscription"] == {"id": subscription.pk, "topic": "orders", "callback_host": "127.0.0.1"}
    assert event["reason"] == "2 consecutive failed delivery attempts; last: HTTP 500"
    assert event["counts"] == {"consecutive_failures": 2}
    assert set(event["times"]) == {"paused_at", "probe_after", "last_failure_at"}
    assert all(SECRET.encode() not in body and b"/sick" not in body for body in raw_events())
    # and it is an ordinary JSON notification
    notification = Notification.objects.get(topic="hub.events.subscription.paused")
    assert notification.content_type == "application/json"


@pytest.mark.django_db
def test_a_probe_that_is_delivered_publishes_resumed(subscriber: Subscriber, hub_settings) -> None:
    # given a paused subscription whose cool-down is over
    subscription = SubscriptionFactory(topic="orders", callback=subscriber.url("/sick"))
    fail_twice(subscriber, subscription)
    Subscription.objects.filter(pk=subscription.pk).update(resume_after=timezone.now() - timedelta(seconds=1))
    # when the callback answers the probe
    subscriber.post_statuses["/sick"] = []
    services.delivery_attempt(delivery_id=DeliveryFactory(subscription=subscription).pk)
    # then
    assert Subscription.objects.get(pk=subscription.pk).state == Subscription.State.ACTIVE
    (event,) = published(EventName.SUBSCRIPTION_RESUMED)
    assert event["reason"] == "the probe was delivered"
    assert event["subscription"]["id"] == subscription.pk
    assert set(event["times"]) == {"paused_at", "resumed_at"}
    assert event["counts"]["paused_seconds"] >= 0


@pytest.mark.django_db
def test_an_operators_pause_and_resume_publish_one_event_each(hub_settings) -> None:
    subscription = SubscriptionFactory(topic="orders")
    # when an operator pauses it twice and resumes it twice
    services.subscription_pause(subscription=subscription)
    services.subscription_pause(subscription=subscription)
    services.subscription_resume(subscription=subscription)
    services.subscription_resume(subscription=subscription)
    # then one event per change of state
    (paused,) = published(EventName.SUBSCRIPTION_PAUSED)
    (resumed,) = published(EventName.SUBSCRIPTION_RESUMED)
    assert paused["reason"] == "paused by an operator"
    assert paused["times"]["probe_after"] is None
    assert resumed["reason"] == "resumed by an operator"


@pytest.mark.django_db
def test_an_event_is_stored_with_its_change_and_spread_only_after_commit(
    no_broker, django_capture_on_commit_callbacks
) -> None:
    subscription = SubscriptionFactory(topic="orders")
    # when the pause commits
    with django_capture_on_commit_callbacks() as callbacks:
        services.subscription_pause(subscription=subscription)
    event = Notification.objects.get(topic=EventName.SUBSCRIPTION_PAUSED.topic)
    # then nothing was sent before the commit, and the event's spread after it
    assert no_broker == []
    for callback in callbacks:
        callback()
    assert (TaskName.SPREAD, {"kwargs": {"notification_id": event.pk}}) in no_broker


@pytest.mark.django_db
def test_a_change_rolled_back_leaves_no_event() -> None:
    subscription = SubscriptionFactory(topic="orders")
    with pytest.raises(RuntimeError), transaction.atomic():
        services.subscription_pause(subscription=subscription)
        raise RuntimeError("the caller's transaction fails")
    assert Subscription.objects.get(pk=subscription.pk).state == Subscription.State.ACTIVE
    assert published() == []


# --- delivery.failed ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_delivery_out_of_retries_publishes_delivery_failed_once(subscriber: Subscriber, hub_settings) -> None:
    # given no retries and no breaker
    hub_settings.HUB_DELIVERY_MAX_RETRIES = 1
    hub_settings.HUB_CALLBACK_FAILURE_PAUSE = 0
    subscriber.post_statuses["/dead"] = [500] * 10
    subscription = SubscriptionFactory(topic="orders", callback=subscriber.url("/dead"), secret=SECRET)
    delivery = DeliveryFactory(subscription=subscription)
    # when both attempts fail, and the settled delivery's message comes again
    for _ in range(3):
        services.delivery_attempt(delivery_id=delivery.pk)
    # then one event, naming the delivery, its notification and its last answer
    assert Delivery.objects.get(pk=delivery.pk).status == Delivery.Status.FAILED
    (event,) = published(EventName.DELIVERY_FAILED)
    assert event["subscription"] == {"id": subscription.pk, "topic": "orders", "callback_host": "127.0.0.1"}
    assert event["reason"] == "HTTP 500"
    assert event["counts"] == {"attempts": 2}
    assert event["delivery"] == {
        "id": delivery.pk,
        "uuid": str(delivery.uuid),
        "notification_id": delivery.notification_id,
        "notification_topic": delivery.notification.topic,
        "last_status_code": 500,
        "replay": 0,
    }
    assert set(event["times"]) == {"published_at", "last_attempt_at"}
    assert all(SECRET.encode() not in body for body in raw_events())


# --- No loop --------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("topic", ["hub.events", "hub.events.subscription.*", "hub"])
def test_nothing_is_said_about_a_subscription_that_receives_events(
    subscriber: Subscriber, hub_settings, topic: str
) -> None:
    # given an operator's event subscription whose callback fails, with one retry
    hub_settings.HUB_DELIVERY_MAX_RETRIES = 0
    operator = SubscriptionFactory(topic=topic, callback=subscriber.url("/ops"))
    # when its deliveries fail for good and pause it, an operator resumes it, and its lease ends
    fail_twice(subscriber, operator)
    services.subscription_resume(subscription=operator)
    Subscription.objects.filter(pk=operator.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    services.subscriptions_expire()
    # then no event at all
    assert published() == []


@pytest.mark.django_db
def test_a_failed_delivery_of_an_event_is_no_event(subscriber: Subscriber, hub_settings) -> None:
    # given an event (a pause's) owed to an operator's callback that fails, with no retries
    hub_settings.HUB_DELIVERY_MAX_RETRIES = 0
    subscriber.post_statuses["/ops"] = [500]
    subscription = SubscriptionFactory(topic="orders")
    services.subscription_pause(subscription=subscription)
    event = Notification.objects.get(topic=EventName.SUBSCRIPTION_PAUSED.topic)
    # (its key changed, so that only the rule about the notification's own topic can hold the event back)
    operator = SubscriptionFactory(topic="hub.events", topic_key="other", callback=subscriber.url("/ops"))
    delivery = DeliveryFactory(subscription=operator, notification=event)
    # when that delivery fails for good
    services.delivery_attempt(delivery_id=delivery.pk)
    # then no delivery.failed event is published about it
    assert Delivery.objects.get(pk=delivery.pk).status == Delivery.Status.FAILED
    assert published(EventName.DELIVERY_FAILED) == []


# --- expired and verification_failed --------------------------------------------------------------


@pytest.mark.django_db
def test_an_expired_subscription_is_removed_with_an_expired_event(hub_settings) -> None:
    # given an expired subscription with a pending delivery, and a live one
    gone = SubscriptionFactory(topic="orders", expired=True, secret=SECRET, callback="https://sub.example/cb?t=1")
    DeliveryFactory(subscription=gone)
    live = SubscriptionFactory(topic="orders")
    # when expiry runs (one subscription per batch, to cover the batches)
    assert services.subscriptions_expire(batch=1) == 1
    # then
    assert list(Subscription.objects.values_list("pk", flat=True)) == [live.pk]
    (event,) = published(EventName.SUBSCRIPTION_EXPIRED)
    assert event["subscription"] == {"id": gone.pk, "topic": "orders", "callback_host": "sub.example"}
    assert event["counts"] == {"lease_seconds": gone.lease_seconds, "deliveries_pending": 1}
    assert set(event["times"]) == {"verified_at", "expires_at"}
    assert "lease" in event["reason"]
    assert all(SECRET.encode() not in body for body in raw_events())


@pytest.mark.django_db
def test_a_request_the_callback_does_not_confirm_publishes_verification_failed(subscriber: Subscriber) -> None:
    # given a subscribe request to a callback that answers its verification with 404
    subscriber.verification["/cb"] = Verification(status=404)
    request = SubscriptionRequestFactory(topic="orders", callback=subscriber.url("/cb?t=9"), secret=SECRET)
    # when it is verified
    services.subscription_verify(request_id=request.pk)
    # then
    assert SubscriptionRequest.objects.get(pk=request.pk).state == SubscriptionRequest.State.FAILED
    (event,) = published(EventName.SUBSCRIPTION_VERIFICATION_FAILED)
    assert event["subscription"] == {"id": None, "topic": "orders", "callback_host": "127.0.0.1"}
    assert event["request"] == {"id": request.pk, "mode": "subscribe", "response_status": 404}
    assert "404" in event["reason"]
    assert set(event["times"]) == {"requested_at", "completed_at"}
    assert all(SECRET.encode() not in body for body in raw_events())


# --- Who may publish and subscribe ----------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("topic", ["hub.events", "hub.events.subscription.paused", "HUB.Events.made.up"])
@pytest.mark.parametrize("idempotency_key", [None, "k-1"])
def test_publishing_on_hub_events_through_the_api_is_a_403_saying_why(topic: str, idempotency_key: str | None) -> None:
    headers = {"HTTP_IDEMPOTENCY_KEY": idempotency_key} if idempotency_key else {}
    response = api_client().post(
        "/api/notifications/", {"topic": topic, "content": {"forged": True}}, content_type="application/json", **headers
    )
    assert response.status_code == 403, response.content
    body = response.json()
    assert "reserved for the hub's own operational events" in body["detail"]
    assert body["errors"] == {"topic": [body["detail"]]}
    assert Notification.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("topic", ["hub", "hub.other", "hub.eventsx"])
def test_publishing_beside_hub_events_is_allowed(no_broker, topic: str) -> None:
    response = api_client().post("/api/notifications/", {"topic": topic, "content": 1}, content_type="application/json")
    assert response.status_code == 202, response.content


@pytest.mark.django_db
def test_a_publish_ping_or_the_command_on_hub_events_is_refused(client) -> None:
    response = client.post(
        "/hub",
        "hub.mode=publish&hub.topic=hub.events.delivery.failed",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 403
    assert "reserved for the hub's own operational events" in response.content.decode()
    with pytest.raises(CommandError, match="reserved for the hub's own operational events"):
        call_command("hub_publish", "hub.events.subscription.paused", "--json", "{}", stdout=StringIO())
    assert Notification.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("topic", ["hub.events", "HUB.EVENTS.*", "hub.events.delivery.failed", "hub"])
def test_subscribing_to_events_through_the_open_hub_is_a_403_pointing_to_the_api(client, topic: str) -> None:
    response = client.post(
        "/hub",
        f"hub.mode=subscribe&hub.topic={topic}&hub.callback=http://127.0.0.1:9000/cb",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 403, response.content
    assert "POST /api/subscriptions/" in response.content.decode()
    assert SubscriptionRequest.objects.count() == 0


@pytest.mark.django_db
def test_a_token_with_the_manage_permission_may_subscribe_to_events(no_broker) -> None:
    response = api_client(publish=False).post(
        "/api/subscriptions/",
        {"topic": "hub.events", "callback": "http://127.0.0.1:9000/ops"},
        content_type="application/json",
    )
    assert response.status_code == 202, response.content
    assert SubscriptionRequest.objects.get().topic_key == "hub.events"


@pytest.mark.django_db
def test_the_schema_documents_the_403s(client) -> None:
    schema = client.get("/api/schema/?format=json").json()
    publish = schema["paths"]["/api/notifications/"]["post"]
    assert "hub.events" in publish["responses"]["403"]["description"]
    assert "hub.events" in publish["description"]
    assert "hub.events" in schema["paths"]["/hub"]["post"]["responses"]["403"]["description"]
    assert "hub.events" in schema["paths"]["/api/subscriptions/"]["post"]["description"]
