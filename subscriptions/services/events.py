"""Operational events: the hub tells operators what happens to subscriptions and deliveries, on its own topics.

Each event is an ordinary JSON notification on `hub.events.<name>`
(topics.EVENTS_PREFIX), published through `notification_publish`: stored,
spread, rate-limited, retried and replayable like any other. Operators
subscribe to `hub.events` (all of them) or to one event's topic. Only the hub
publishes there (rules.topic_events_publish_refuse).

An event is published in the transaction that makes the change it describes,
so it is stored with the change, never without it, and spreads once that
commits. Nothing is said about a subscription that itself receives events (nor
about a delivery of an event): an event subscriber's troubles would otherwise
become events sent to it, without end.
"""

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from subscriptions import netguard
from subscriptions.errors import HubError
from subscriptions.models import Delivery, Notification, Subscription, SubscriptionRequest
from subscriptions.services import publishing
from subscriptions.topics import EVENTS_PREFIX, is_events_topic, key_receives_events

# Every service module logs as "subscriptions.services", the one logger they shared
# before the package was split: log configuration and readers select that name.
logger = logging.getLogger("subscriptions.services")


class EventName(StrEnum):
    """The events the hub publishes; each on the topic `hub.events.<value>`."""

    SUBSCRIPTION_PAUSED = "subscription.paused"
    SUBSCRIPTION_RESUMED = "subscription.resumed"
    SUBSCRIPTION_EXPIRED = "subscription.expired"
    SUBSCRIPTION_VERIFICATION_FAILED = "subscription.verification_failed"
    DELIVERY_FAILED = "delivery.failed"

    @property
    def topic(self) -> str:
        return f"{EVENTS_PREFIX}.{self.value}"


def callback_host(callback: str) -> str:
    """The host a request for the callback really goes to (the outbound guard's reading): never its path or query."""
    try:
        return netguard.url_target(callback).host or "?"
    except netguard.ForbiddenDestination:
        return "?"


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_body(
    *,
    name: EventName,
    occurred_at: datetime,
    subscription_id: int | None,
    topic: str,
    callback: str,
    reason: str,
    counts: Mapping[str, int] | None = None,
    times: Mapping[str, datetime | None] | None = None,
    sections: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The JSON body of an event: what happened, to which subscription (its callback's host only), why, when.

    Takes no secret, so it can show none; times are ISO 8601 in UTC. `sections`
    adds objects such as `delivery` or `request` beside `subscription`.
    """
    body: dict[str, Any] = {
        "event": name.value,
        "occurred_at": _time(occurred_at),
        "subscription": {"id": subscription_id, "topic": topic, "callback_host": callback_host(callback)},
        "reason": reason,
        "counts": dict(counts or {}),
        "times": {key: _time(value) for key, value in (times or {}).items()},
    }
    for key, section in (sections or {}).items():
        body[key] = dict(section)
    return body


def event_publish(*, name: EventName, topic_key: str, body: dict[str, Any]) -> Notification | None:
    """Publish an event on its topic through the notification pipeline, in the caller's transaction.

    `topic_key` is that of the subscription the event is about: when it
    receives events itself, nothing is published (None). A refusal (a tiny
    HUB_MAX_CONTENT_BYTES) is logged and never undoes the change it describes.
    """
    if key_receives_events(topic_key):
        return None
    try:
        return publishing.notification_publish(
            topic=name.topic, content=publishing.json_body(body), content_type="application/json", hub_event=True
        )
    except HubError as exc:
        logger.error("event %s about subscription %s not published: %s", name, body["subscription"]["id"], exc)
        return None


def _subscription_event_publish(
    *,
    name: EventName,
    subscription: Mapping[str, Any],
    now: datetime,
    reason: str,
    counts: Mapping[str, int],
    times: Mapping[str, datetime | None],
) -> Notification | None:
    """An event about one subscription, told from its row (id, topic, topic_key, callback), published."""
    body = event_body(
        name=name,
        occurred_at=now,
        subscription_id=subscription["id"],
        topic=subscription["topic"],
        callback=subscription["callback"],
        reason=reason,
        counts=counts,
        times=times,
    )
    return event_publish(name=name, topic_key=subscription["topic_key"], body=body)


# --- One function per event: what it says, read from the rows it is about -------------------------------

# The subscription's columns an event reads; never the secret.
_SUBSCRIPTION_FIELDS = (
    "id",
    "topic",
    "topic_key",
    "callback",
    "consecutive_failures",
    "last_failure_at",
    "paused_at",
    "pause_reason",
    "resume_after",
)


def subscription_paused(*, subscription_id: int, now: datetime) -> Notification | None:
    """`hub.events.subscription.paused`: the breaker (or an operator) paused the subscription; the reason is its own."""
    row = Subscription.objects.filter(pk=subscription_id).values(*_SUBSCRIPTION_FIELDS).first()
    if row is None:
        return None
    return _subscription_event_publish(
        name=EventName.SUBSCRIPTION_PAUSED,
        subscription=row,
        now=now,
        reason=row["pause_reason"],
        counts={"consecutive_failures": row["consecutive_failures"]},
        # probe_after: when one delivery will try the callback again; null when an operator paused it.
        times={
            "paused_at": row["paused_at"],
            "probe_after": row["resume_after"],
            "last_failure_at": row["last_failure_at"],
        },
    )


def subscription_resumed(*, subscription_id: int, reason: str, now: datetime) -> Notification | None:
    """`hub.events.subscription.resumed`: a paused subscription is active again; its parked deliveries are sent."""
    row = Subscription.objects.filter(pk=subscription_id).values(*_SUBSCRIPTION_FIELDS).first()
    if row is None:
        return None
    paused_at = row["paused_at"]
    return _subscription_event_publish(
        name=EventName.SUBSCRIPTION_RESUMED,
        subscription=row,
        now=now,
        reason=reason,
        counts={"paused_seconds": int((now - paused_at).total_seconds()) if paused_at else 0},
        times={"paused_at": paused_at, "resumed_at": now},
    )


def subscription_expired(
    *, subscription: Mapping[str, Any], deliveries_pending: int, now: datetime
) -> Notification | None:
    """`hub.events.subscription.expired`: the lease ended and the subscription was removed.

    `subscription` holds the removed row's id, topic, topic_key, callback,
    lease_seconds, verified_at and expires_at (read before the removal).
    """
    return _subscription_event_publish(
        name=EventName.SUBSCRIPTION_EXPIRED,
        subscription=subscription,
        now=now,
        reason=f"the lease of {subscription['lease_seconds']} seconds ended without a renewal",
        # Pending deliveries are cancelled when next tried: they are never sent.
        counts={"lease_seconds": subscription["lease_seconds"], "deliveries_pending": deliveries_pending},
        times={"verified_at": subscription["verified_at"], "expires_at": subscription["expires_at"]},
    )


def verification_failed(*, request: SubscriptionRequest) -> Notification | None:
    """`hub.events.subscription.verification_failed`: the callback did not confirm a (un)subscribe request.

    `subscription.id` is the existing subscription of that topic and callback
    (which the failure leaves as it was), or null.
    """
    subscription_id = (
        Subscription.objects.filter(topic_key=request.topic_key, callback=request.callback)
        .values_list("pk", flat=True)
        .first()
    )
    completed_at = request.completed_at or request.updated_at
    body = event_body(
        name=EventName.SUBSCRIPTION_VERIFICATION_FAILED,
        occurred_at=completed_at,
        subscription_id=subscription_id,
        topic=request.topic,
        callback=request.callback,
        reason=request.reason,
        times={"requested_at": request.created_at, "completed_at": completed_at},
        sections={"request": {"id": request.pk, "mode": request.mode, "response_status": request.response_status}},
    )
    return event_publish(name=EventName.SUBSCRIPTION_VERIFICATION_FAILED, topic_key=request.topic_key, body=body)


def delivery_failed(*, delivery_id: int, now: datetime) -> Notification | None:
    """`hub.events.delivery.failed`: a delivery ran out of retries (once per delivery; a replay that fails again
    says so again). None for a delivery of an event, or to a subscription that receives events."""
    row = (
        Delivery.objects.filter(pk=delivery_id)
        .values(
            "id",
            "uuid",
            "callback",
            "attempts",
            "last_status_code",
            "last_error",
            "last_attempt_at",
            "replay",
            "notification_id",
            "notification__topic",
            "notification__created_at",
            "subscription_id",
            "subscription__topic",
            "subscription__topic_key",
        )
        .first()
    )
    if row is None or is_events_topic(row["notification__topic"]):
        return None
    topic = row["subscription__topic"] or row["notification__topic"]
    body = event_body(
        name=EventName.DELIVERY_FAILED,
        occurred_at=now,
        subscription_id=row["subscription_id"],
        topic=topic,
        callback=row["callback"],
        reason=row["last_error"],
        counts={"attempts": row["attempts"]},
        times={"published_at": row["notification__created_at"], "last_attempt_at": row["last_attempt_at"]},
        sections={
            "delivery": {
                "id": row["id"],
                "uuid": str(row["uuid"]),
                "notification_id": row["notification_id"],
                "notification_topic": row["notification__topic"],
                "last_status_code": row["last_status_code"],
                "replay": row["replay"],
            }
        },
    )
    # A subscription removed meanwhile receives nothing more: no loop to fear.
    return event_publish(name=EventName.DELIVERY_FAILED, topic_key=row["subscription__topic_key"] or "", body=body)
