"""Writes, by concern: subscribing, publishing, sweeping, delivering, the circuit breaker, operator actions.

Tasks and views are thin and call these. Every function is keyword-only and
safe to run twice for the same input (tasks use acks_late). The edges use
`from subscriptions import services; services.X`: this package re-exports the
public names, each defined once in the module that says what it holds. A test
that replaces a name patches that module (the one whose code looks it up).
"""

from subscriptions.errors import DeliveryFailed, HubError
from subscriptions.rules import (
    callback_validate,
    lease_clamp,
    lease_seconds_parse,
    secret_validate,
    topic_denied_reason,
    topic_key_for_subscription,
    topic_keys_for_publish,
)
from subscriptions.services.breaker import subscription_pause, subscription_release_parked, subscription_resume
from subscriptions.services.delivering import (
    Resend,
    deliveries_enqueue_due,
    delivery_attempt,
    outcome_batching_start,
    outcome_batching_stop,
    retry_delay,
    retry_delay_max,
    subscription_rate,
)
from subscriptions.services.idempotency import IdempotentPublish, notification_publish_idempotent
from subscriptions.services.operations import (
    SecretRotation,
    deliveries_replay,
    previous_secrets_erase,
    subscription_rotate_secret,
    subscription_update,
    subscriptions_expire_now,
)
from subscriptions.services.publishing import (
    notification_publish,
    notification_publish_json,
    notification_spread,
    publish_ping,
    topic_fetch_and_publish,
)
from subscriptions.services.queueing import deliveries_enqueue
from subscriptions.services.replaying import subscription_replay
from subscriptions.services.retention import (
    PurgeCounts,
    retention_plan,
    retention_purge,
    retention_window_start,
    subscription_erase,
)
from subscriptions.services.spread_sender import spread_batching_start, spread_batching_stop
from subscriptions.services.subscribing import (
    subscription_delete,
    subscription_request,
    subscription_verify,
    subscriptions_expire,
)
from subscriptions.services.sweeping import broker_marker_read, broker_recovery_claim, hub_recover, hub_sweep

__all__ = [
    "DeliveryFailed",
    "HubError",
    "IdempotentPublish",
    "PurgeCounts",
    "Resend",
    "SecretRotation",
    "broker_marker_read",
    "broker_recovery_claim",
    "callback_validate",
    "deliveries_enqueue",
    "deliveries_enqueue_due",
    "deliveries_replay",
    "delivery_attempt",
    "hub_recover",
    "hub_sweep",
    "lease_clamp",
    "lease_seconds_parse",
    "notification_publish",
    "notification_publish_idempotent",
    "notification_publish_json",
    "notification_spread",
    "outcome_batching_start",
    "outcome_batching_stop",
    "previous_secrets_erase",
    "publish_ping",
    "retention_plan",
    "retention_purge",
    "retention_window_start",
    "retry_delay",
    "retry_delay_max",
    "secret_validate",
    "spread_batching_start",
    "spread_batching_stop",
    "subscription_delete",
    "subscription_erase",
    "subscription_pause",
    "subscription_rate",
    "subscription_release_parked",
    "subscription_replay",
    "subscription_request",
    "subscription_resume",
    "subscription_rotate_secret",
    "subscription_update",
    "subscription_verify",
    "subscriptions_expire",
    "subscriptions_expire_now",
    "topic_denied_reason",
    "topic_fetch_and_publish",
    "topic_key_for_subscription",
    "topic_keys_for_publish",
]
