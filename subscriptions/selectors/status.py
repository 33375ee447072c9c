"""What a subscriber may see of its own subscription (the status page): bounded, indexed lookups only."""

from datetime import datetime
from typing import NamedTuple

from django.db.models import Subquery
from django.utils import timezone

from subscriptions.models import Delivery, DeliveryAttempt, Subscription

# A subscription's newest deliveries searched for its last failed attempt, and the most
# waiting deliveries counted exactly: the status page stays bounded at any table size.
STATUS_FAILURE_SCAN = 500
STATUS_WAITING_CAP = 10_000


class SubscriptionStatus(NamedTuple):
    """What a subscriber may see of its own subscription: never content, secrets or other subscribers."""

    topic: str
    callback: str
    state: str  # active, paused or expired
    paused_at: datetime | None
    lease_expires_at: datetime
    last_delivered_at: datetime | None
    last_failure_at: datetime | None
    last_failure_status_code: int | None
    last_failure_error: str
    deliveries_waiting: int
    deliveries_waiting_capped: bool


def subscription_status(*, topic_key: str, callback: str, now: datetime | None = None) -> SubscriptionStatus | None:
    """The status of the one subscription of `callback` under `topic_key`, None when there is none.

    Indexed lookups only: the subscription by its unique pair, the last success
    by (subscription, delivered_at), the waiting count up to STATUS_WAITING_CAP,
    and the last failed attempt among the STATUS_FAILURE_SCAN newest deliveries.
    """
    now = now or timezone.now()
    subscription = (
        Subscription.objects.filter(topic_key=topic_key, callback=callback)
        .only("topic", "callback", "state", "paused_at", "expires_at", "last_failure_at")
        .first()
    )
    if subscription is None:
        return None
    deliveries = Delivery.objects.filter(subscription_id=subscription.pk)
    last_delivered_at = (
        deliveries.filter(delivered_at__isnull=False).order_by("-delivered_at").values_list("delivered_at", flat=True)
    ).first()
    waiting = deliveries.filter(status=Delivery.Status.PENDING).order_by()[: STATUS_WAITING_CAP + 1].count()
    newest = deliveries.order_by("-id").values("id")[:STATUS_FAILURE_SCAN]
    failed_attempt = (
        DeliveryAttempt.objects.filter(delivery_id__in=Subquery(newest))
        .exclude(status_code__gte=200, status_code__lt=300)
        .order_by("-started_at")
        .values_list("status_code", "error")
        .first()
    )
    status_code, error = failed_attempt if failed_attempt else (None, "")
    expired = subscription.expires_at <= now
    return SubscriptionStatus(
        topic=subscription.topic,
        callback=subscription.callback,
        state="expired" if expired else subscription.state,
        paused_at=subscription.paused_at if subscription.state == Subscription.State.PAUSED else None,
        lease_expires_at=subscription.expires_at,
        last_delivered_at=last_delivered_at,
        last_failure_at=subscription.last_failure_at,
        last_failure_status_code=status_code if subscription.last_failure_at else None,
        last_failure_error=error if subscription.last_failure_at else "",
        deliveries_waiting=min(waiting, STATUS_WAITING_CAP),
        deliveries_waiting_capped=waiting > STATUS_WAITING_CAP,
    )
