"""Which live subscriptions a notification reaches: the spread's one read, streamed."""

from collections.abc import Iterator
from datetime import datetime
from typing import NamedTuple

from django.db.models.functions import Length

from subscriptions.models import Subscription

# Rows fetched per round trip while streaming a large matching set.
MATCH_CHUNK = 2000


class Match(NamedTuple):
    subscription_id: int
    callback: str
    # When the subscription is paused and not yet due for a probe: park until then.
    parked_until: datetime | None


def subscriptions_matching(keys: list[str], *, now: datetime) -> Iterator[Match]:
    """Every live subscription under one of keys, once per callback.

    One indexed query (`topic_key IN keys`), streamed in chunks. A callback
    subscribed at several matching levels appears once, with its most specific
    subscription (the longest key), whose secret then signs the delivery.
    Paused subscriptions are included: their deliveries wait for the probe.
    """
    rows = (
        Subscription.objects.filter(topic_key__in=keys, expires_at__gt=now)
        .annotate(key_length=Length("topic_key"))
        .order_by("callback", "-key_length")
        .values_list("id", "callback", "state", "resume_after")
    )
    previous = None
    for subscription_id, callback, state, resume_after in rows.iterator(chunk_size=MATCH_CHUNK):
        if callback == previous:
            continue
        previous = callback
        paused = state == Subscription.State.PAUSED and resume_after is not None and resume_after > now
        yield Match(subscription_id, callback, resume_after if paused else None)
