"""The operators' view: subscriptions, verification requests, notifications and deliveries.

It answers "did my subscriber get it, and if not, why?": a subscription's page
shows its state, lease, figures and recent deliveries, a notification's page its
outcome per subscriber. Secrets are never shown: the pages say only whether one
is set. The lists stay fast on large tables: no COUNT(*) over a whole table
(PostgreSQL's estimate instead), no facet counts, no per-row queries.

One module per model admin (importing it registers it), and the shared parts:
`base` (paginator, list admins) and `display` (cells and tables).
"""

from subscriptions.admin.base import EXACT_COUNT_BELOW, EstimatedCountPaginator, LargeListAdmin, ReadOnlyAdmin
from subscriptions.admin.delivery import DeliveryAdmin, DeliveryAttemptInline
from subscriptions.admin.display import ERROR_PREVIEW, can_retry_deliveries
from subscriptions.admin.logins import AccessAttemptAdmin
from subscriptions.admin.notification import NOTIFICATION_DELIVERIES, NotificationAdmin
from subscriptions.admin.subscription import RECENT_DELIVERIES, SubscriptionAdmin
from subscriptions.admin.subscription_request import SubscriptionRequestAdmin

__all__ = [
    "ERROR_PREVIEW",
    "EXACT_COUNT_BELOW",
    "NOTIFICATION_DELIVERIES",
    "RECENT_DELIVERIES",
    "AccessAttemptAdmin",
    "DeliveryAdmin",
    "DeliveryAttemptInline",
    "EstimatedCountPaginator",
    "LargeListAdmin",
    "NotificationAdmin",
    "ReadOnlyAdmin",
    "SubscriptionAdmin",
    "SubscriptionRequestAdmin",
    "can_retry_deliveries",
]
