"""Reads: which subscriptions a notification reaches, and delivery figures."""

from collections.abc import Iterator
from datetime import datetime

from django.db.models import Count, Q
from django.db.models.functions import Length

from subscriptions.models import Delivery, Subscription

# Rows fetched per round trip while streaming a large matching set.
MATCH_CHUNK = 2000


def subscriptions_matching(keys: list[str], *, now: datetime) -> Iterator[tuple[int, str]]:
    """(subscription id, callback) of every live subscription under one of keys, once per callback.

    One indexed query (`topic_key IN keys`), streamed in chunks. A callback
    subscribed at several matching levels appears once, with its most specific
    subscription (the longest key), whose secret then signs the delivery.
    """
    rows = (
        Subscription.objects.filter(topic_key__in=keys, expires_at__gt=now, state=Subscription.State.ACTIVE)
        .annotate(key_length=Length("topic_key"))
        .order_by("callback", "-key_length")
        .values_list("id", "callback")
    )
    previous = None
    for subscription_id, callback in rows.iterator(chunk_size=MATCH_CHUNK):
        if callback != previous:
            previous = callback
            yield subscription_id, callback


def delivery_counts(*, notification_id: int) -> dict[str, int]:
    """Deliveries of one notification by status, every status present (zero where none)."""
    statuses = Delivery.Status.values
    totals = Delivery.objects.filter(notification_id=notification_id).aggregate(
        **{status: Count("id", filter=Q(status=status)) for status in statuses}
    )
    return {status: totals[status] or 0 for status in statuses}
