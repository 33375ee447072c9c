"""The JSON API, one module per resource: notifications, subscriptions (with their requests and the operator's
actions on one), deliveries. urls.py names the views through this package."""

from subscriptions.api.views.deliveries import DeliveryDetail, DeliveryList, DeliveryRetry
from subscriptions.api.views.notifications import NotificationCreate, NotificationDetail
from subscriptions.api.views.subscriptions import (
    SubscriptionDetail,
    SubscriptionListCreate,
    SubscriptionPause,
    SubscriptionReplay,
    SubscriptionRequestDetail,
    SubscriptionResume,
    SubscriptionRetryFailed,
    SubscriptionRotateSecret,
)

__all__ = [
    "DeliveryDetail",
    "DeliveryList",
    "DeliveryRetry",
    "NotificationCreate",
    "NotificationDetail",
    "SubscriptionDetail",
    "SubscriptionListCreate",
    "SubscriptionPause",
    "SubscriptionReplay",
    "SubscriptionRequestDetail",
    "SubscriptionResume",
    "SubscriptionRetryFailed",
    "SubscriptionRotateSecret",
]
