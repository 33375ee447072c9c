"""Reads: which subscriptions a notification reaches, which deliveries a filter selects, and delivery figures.

The edges (API views, admin, management commands) read through these, so that a
question such as "which deliveries of this subscription failed since T" has one
answer wherever it is asked. One module per concern; every name is re-exported
here, so callers import `subscriptions.selectors` whatever module holds it.
"""

from subscriptions.selectors.delivery_run import DeliveryWork, Payload, delivery_work, notification_payload
from subscriptions.selectors.figures import (
    CHART_OUTCOMES,
    Attention,
    AttentionList,
    MinuteCount,
    PendingDepths,
    deliveries_per_minute,
    delivery_counts,
    estimated_rows,
    notifications_delivery_counts,
    pending_depths,
    subscription_figures,
    subscriptions_needing_attention,
    subscriptions_recent_figures,
)
from subscriptions.selectors.lists import (
    LIKELY_REFUSED,
    REPLAY_PAUSED_SHOWN,
    ReplayOutlook,
    deliveries_failed,
    deliveries_list,
    delivery_status,
    replay_outlook,
    subscription_exists,
    subscriptions_list,
)
from subscriptions.selectors.matching import MATCH_CHUNK, Match, subscriptions_matching
from subscriptions.selectors.status import (
    STATUS_FAILURE_SCAN,
    STATUS_WAITING_CAP,
    SubscriptionStatus,
    subscription_status,
)

__all__ = [
    "CHART_OUTCOMES",
    "LIKELY_REFUSED",
    "MATCH_CHUNK",
    "REPLAY_PAUSED_SHOWN",
    "STATUS_FAILURE_SCAN",
    "STATUS_WAITING_CAP",
    "Attention",
    "AttentionList",
    "DeliveryWork",
    "Match",
    "MinuteCount",
    "Payload",
    "PendingDepths",
    "ReplayOutlook",
    "SubscriptionStatus",
    "deliveries_failed",
    "deliveries_list",
    "deliveries_per_minute",
    "delivery_counts",
    "delivery_status",
    "delivery_work",
    "estimated_rows",
    "notification_payload",
    "notifications_delivery_counts",
    "pending_depths",
    "replay_outlook",
    "subscription_exists",
    "subscription_figures",
    "subscription_status",
    "subscriptions_list",
    "subscriptions_matching",
    "subscriptions_needing_attention",
    "subscriptions_recent_figures",
]
