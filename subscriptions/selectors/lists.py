"""Subscriptions and deliveries narrowed by filters: what the edges list, and what a replay sends.

One function per question ("which deliveries of this subscription failed since T"),
whatever edge asks it; callers order and slice.
"""

from datetime import datetime
from typing import NamedTuple

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from subscriptions.models import Delivery, Subscription


def subscriptions_list(
    *,
    among: QuerySet[Subscription] | None = None,
    topic_keys: list[str] | None = None,
    callback: str | None = None,
    callback_contains: str | None = None,
    state: str | None = None,
    expired: bool | None = None,
    now: datetime | None = None,
) -> QuerySet[Subscription]:
    """Subscriptions (of `among`, else all) narrowed by each filter given, in no order.

    `state` selects subscriptions in that state whose lease still runs; `expired`
    those whose lease is over (True) or still runs (False), at `now`.
    """
    subscriptions = Subscription.objects.all() if among is None else among
    now = now or timezone.now()
    if topic_keys is not None:
        subscriptions = subscriptions.filter(topic_key__in=topic_keys)
    if callback is not None:
        subscriptions = subscriptions.filter(callback=callback)
    if callback_contains:
        subscriptions = subscriptions.filter(callback__contains=callback_contains)
    if state is not None:
        subscriptions = subscriptions.filter(state=state, expires_at__gt=now)
    if expired is True:
        subscriptions = subscriptions.filter(expires_at__lte=now)
    elif expired is False:
        subscriptions = subscriptions.filter(expires_at__gt=now)
    return subscriptions


def deliveries_list(
    *,
    subscription_id: int | None = None,
    subscriptions: QuerySet[Subscription] | None = None,
    notification_id: int | None = None,
    status: str | None = None,
    since: datetime | None = None,
    delivery_id: int | None = None,
) -> QuerySet[Delivery]:
    """Deliveries narrowed by each filter given (`since`: last attempt at or after it), in no order.

    Each filter is an indexed lookup; callers order and slice what they show.
    """
    deliveries = Delivery.objects.all()
    if subscription_id is not None:
        deliveries = deliveries.filter(subscription_id=subscription_id)
    if subscriptions is not None:
        deliveries = deliveries.filter(subscription__in=subscriptions)
    if notification_id is not None:
        deliveries = deliveries.filter(notification_id=notification_id)
    if status is not None:
        deliveries = deliveries.filter(status=status)
    if since is not None:
        deliveries = deliveries.filter(last_attempt_at__gte=since)
    if delivery_id is not None:
        deliveries = deliveries.filter(pk=delivery_id)
    return deliveries


def subscription_exists(*, subscription_id: int) -> bool:
    return Subscription.objects.filter(pk=subscription_id).exists()


def delivery_status(*, delivery_id: int) -> str | None:
    """The delivery's status, None when there is no such delivery."""
    return Delivery.objects.filter(pk=delivery_id).values_list("status", flat=True).first()


def deliveries_failed(
    *,
    subscription_id: int | None = None,
    subscriptions: QuerySet[Subscription] | None = None,
    since: datetime | None = None,
    delivery_id: int | None = None,
) -> QuerySet[Delivery]:
    """The dead letters: failed deliveries, of a subscription, since a time, or one delivery (what a replay sends)."""
    return deliveries_list(
        subscription_id=subscription_id,
        subscriptions=subscriptions,
        status=Delivery.Status.FAILED,
        since=since,
        delivery_id=delivery_id,
    )


# A failed delivery whose last answer was a 4xx other than 408 (timeout) and 429 (slow down):
# the subscriber refused that message, and will most likely refuse it again.
LIKELY_REFUSED = (Q(last_status_code__gte=400) & Q(last_status_code__lt=500)) & ~Q(last_status_code__in=[408, 429])
# Paused subscriptions a replay names (the rest are counted).
REPLAY_PAUSED_SHOWN = 20


class ReplayOutlook(NamedTuple):
    """What replaying a set of deliveries will do, told before it is done."""

    failed: int  # the dead letters in the set: what a replay sends
    refused: int  # of those, failed with a 4xx other than 408/429: likely to fail again
    refused_codes: list[int]  # their status codes, fewest first
    held: int  # of those, deliveries of a paused subscription: they wait for its resume
    paused_subscriptions: list[int]  # the paused subscriptions' ids (up to REPLAY_PAUSED_SHOWN)


def replay_outlook(deliveries: QuerySet[Delivery]) -> ReplayOutlook:
    """How many of `deliveries` a replay sends, how many will likely be refused again, how many will wait.

    Three queries whatever the set's size: the counts, the refused status codes, the paused subscriptions.
    """
    failed = deliveries.filter(status=Delivery.Status.FAILED).order_by()
    paused = Q(subscription__state=Subscription.State.PAUSED)
    counts = failed.aggregate(
        failed=Count("id"), refused=Count("id", filter=LIKELY_REFUSED), held=Count("id", filter=paused)
    )
    codes = sorted(
        failed.filter(LIKELY_REFUSED).values_list("last_status_code", flat=True).distinct()[:REPLAY_PAUSED_SHOWN]
    )
    paused_ids = sorted(
        failed.filter(paused).values_list("subscription_id", flat=True).distinct()[:REPLAY_PAUSED_SHOWN]
    )
    return ReplayOutlook(counts["failed"], counts["refused"], codes, counts["held"], paused_ids)
