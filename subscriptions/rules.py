"""Input rules for subscribing and publishing: lease parsing and bounds, callback and secret checks, the topic
keys a request names, and the topic denylist. No database, no writes; they raise HubError saying what is wrong.
"""

from urllib.parse import urlsplit

from subscriptions import netguard
from subscriptions.errors import HubError
from subscriptions.models import MAX_CALLBACK_LENGTH, MAX_SECRET_BYTES
from subscriptions.topics import (
    EVENTS_PREFIX,
    InvalidTopic,
    has_space_or_control,
    is_events_topic,
    key_receives_events,
    publish_keys,
    subscription_key,
)
from websubhub.hub_settings import hub_settings


def lease_seconds_parse(raw: str) -> int:
    """hub.lease_seconds as sent in a form: a positive whole number of seconds."""
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit() or int(raw) <= 0:
        raise HubError(
            f"hub.lease_seconds must be a positive whole number of seconds, not {raw[:40]!r}", field="hub.lease_seconds"
        )
    return int(raw)


def lease_clamp(requested: int | None) -> int:
    """The lease granted: the default when none is asked, else clamped to the configured bounds."""
    if requested is None:
        return hub_settings.HUB_LEASE_SECONDS_DEFAULT
    return max(hub_settings.HUB_LEASE_SECONDS_MIN, min(hub_settings.HUB_LEASE_SECONDS_MAX, requested))


def callback_validate(callback: str) -> None:
    if not callback:
        raise HubError("hub.callback is empty", field="hub.callback")
    if len(callback) > MAX_CALLBACK_LENGTH:
        raise HubError(f"hub.callback is longer than {MAX_CALLBACK_LENGTH} characters", field="hub.callback")
    if has_space_or_control(callback):
        raise HubError("hub.callback contains whitespace or control characters", field="hub.callback")
    try:
        parts = urlsplit(callback)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise HubError(f"hub.callback is not a valid URL: {exc}", field="hub.callback") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise HubError("hub.callback must be an http:// or https:// URL", field="hub.callback")
    if not parts.hostname:
        raise HubError("hub.callback URL has no host", field="hub.callback")
    try:
        netguard.check_url_with_settings(callback)
    except netguard.ForbiddenDestination as exc:
        raise HubError(f"hub.callback refused: {exc}", field="hub.callback") from None


def secret_validate(secret: str) -> None:
    if len(secret.encode("utf-8")) > MAX_SECRET_BYTES:
        raise HubError(f"hub.secret must be shorter than 200 bytes (at most {MAX_SECRET_BYTES})", field="hub.secret")
    if "\x00" in secret:
        # PostgreSQL text cannot hold NUL: storing it would be a 500, not a 400.
        raise HubError("hub.secret cannot contain a NUL character", field="hub.secret")


# A secret rotation's overlap (POST /api/subscriptions/<id>/rotate-secret): a day unless asked, and at most
# 30 days, so that a replaced secret (perhaps leaked) cannot go on signing for ever.
ROTATION_GRACE_SECONDS_DEFAULT = 24 * 3600
ROTATION_GRACE_SECONDS_MAX = 30 * 24 * 3600


ROTATION_GRACE_REFUSAL = (
    f"grace_seconds must be a whole number of seconds from 0 to {ROTATION_GRACE_SECONDS_MAX} (30 days)"
)


def rotation_grace_validate(grace_seconds: int) -> None:
    if not 0 <= grace_seconds <= ROTATION_GRACE_SECONDS_MAX:
        raise HubError(f"{ROTATION_GRACE_REFUSAL}, not {grace_seconds}", field="grace_seconds")


def rotation_secret_validate(secret: str) -> None:
    """A secret an operator rotates to: as hub.secret, and not empty (rotating never turns signing off)."""
    if not secret:
        raise HubError("hub.secret cannot be empty: leave it out for a random one", field="hub.secret")
    secret_validate(secret)


def topic_key_for_subscription(topic: str) -> str:
    try:
        return subscription_key(topic)
    except InvalidTopic as exc:
        raise HubError(str(exc), field="hub.topic") from None


def topic_keys_for_publish(topic: str) -> list[str]:
    try:
        return publish_keys(topic)
    except InvalidTopic as exc:
        raise HubError(str(exc), field="hub.topic") from None


def topic_events_publish_refuse(topic: str) -> None:
    """Refuse (403) a publish from outside on the hub's own event topics: only the hub publishes there."""
    if is_events_topic(topic):
        raise HubError(
            f"{EVENTS_PREFIX} and the topics under it are reserved for the hub's own operational events: "
            "only the hub publishes there",
            403,
            field="hub.topic",
        )


def topic_events_subscribe_refuse(topic_key: str) -> None:
    """Refuse (403) an open subscribe whose topic would receive the hub's operational events."""
    if key_receives_events(topic_key):
        raise HubError(
            f"a subscription to this topic would receive the hub's operational events ({EVENTS_PREFIX}.*), "
            "which name other subscriptions: subscribe with POST /api/subscriptions/ and a token with the "
            "manage permission",
            403,
            field="hub.topic",
        )


def topic_denied_reason(topic: str) -> str:
    """Why the hub refuses subscriptions to topic, or "" when it does not."""
    for pattern in hub_settings.HUB_TOPIC_DENYLIST:
        if pattern.search(topic):
            return "subscriptions to this topic are not allowed by this hub"
    return ""
