"""Reads: which subscriptions a notification reaches, which deliveries a filter selects, and delivery figures.

The edges (API views, admin, management commands) read through these, so that a
question such as "which deliveries of this subscription failed since T" has one
answer wherever it is asked.
"""

import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import NamedTuple

from django.db import connections
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import Length
from django.utils import timezone

from subscriptions.models import Delivery, Notification, Subscription

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


def estimated_rows(queryset: QuerySet) -> int | None:
    """The PostgreSQL planner's row estimate for a query, from the table's statistics: no scan.

    None on other databases, which have no such estimate. The admin's paginator
    and the /metrics subscription counts both count large tables with it.
    """
    if connections[queryset.db].vendor != "postgresql":
        return None
    plan = json.loads(queryset.explain(format="json"))
    return int(plan[0]["Plan"]["Plan Rows"])


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


def subscription_figures(*, subscription_id: int) -> dict[str, object]:
    """Delivered and failed counts, last success and last failure of one subscription (indexed lookups)."""
    deliveries = Delivery.objects.filter(subscription_id=subscription_id)
    counts = deliveries.aggregate(
        delivered=Count("id", filter=Q(status=Delivery.Status.DELIVERED)),
        failed=Count("id", filter=Q(status=Delivery.Status.FAILED)),
        pending=Count("id", filter=Q(status=Delivery.Status.PENDING)),
    )
    last = (
        deliveries.filter(delivered_at__isnull=False).order_by("-delivered_at").values_list("delivered_at", flat=True)
    ).first()
    return {**counts, "last_success_at": last}


def delivery_counts(*, notification_id: int) -> dict[str, int]:
    """Deliveries of one notification by status, every status present (zero where none)."""
    statuses = Delivery.Status.values
    totals = Delivery.objects.filter(notification_id=notification_id).aggregate(
        **{status: Count("id", filter=Q(status=status)) for status in statuses}
    )
    return {status: totals[status] or 0 for status in statuses}


class Payload(NamedTuple):
    topic: str
    content: bytes
    content_type: str
    published_at: datetime


# Notifications never change once stored, so a worker keeps the recent ones:
# a fan-out to thousands of callbacks reads the content from the database once
# per process instead of once per delivery.
PAYLOAD_CACHE_BYTES = 64 * 1024 * 1024
_payloads: OrderedDict[int, Payload] = OrderedDict()
_payload_bytes = 0
_payload_lock = threading.Lock()


def notification_payload(notification_id: int) -> Payload | None:
    """The topic, exact bytes and content type of a notification (cached per process)."""
    global _payload_bytes
    with _payload_lock:
        cached = _payloads.get(notification_id)
        if cached is not None:
            _payloads.move_to_end(notification_id)
            return cached
    row = (
        Notification.objects.filter(pk=notification_id)
        .values_list("topic", "content", "content_type", "created_at")
        .first()
    )
    if row is None:
        return None
    payload = Payload(row[0], bytes(row[1]), row[2], row[3])
    with _payload_lock:
        if notification_id not in _payloads:
            _payloads[notification_id] = payload
            _payload_bytes += len(payload.content)
            while _payload_bytes > PAYLOAD_CACHE_BYTES and len(_payloads) > 1:
                _, evicted = _payloads.popitem(last=False)
                _payload_bytes -= len(evicted.content)
    return payload


class DeliveryWork(NamedTuple):
    """What one delivery run needs of a delivery and its subscription, read in one statement."""

    delivery_id: int
    status: str
    attempts: int
    callback: str
    notification_id: int
    uuid: str
    subscription_id: int | None
    # The subscription's columns (None when it ended).
    expires_at: datetime | None
    state: str | None
    consecutive_failures: int
    resume_after: datetime | None
    secret: str
    standard_webhooks: bool
    rate_limit: str


_WORK_DELIVERY_FIELDS = ("id", "status", "attempts", "callback", "notification", "uuid", "subscription")
_WORK_SUBSCRIPTION_FIELDS = (
    "expires_at",
    "state",
    "consecutive_failures",
    "resume_after",
    "secret",
    "standard_webhooks",
    "rate_limit",
)
_work_sql_cache: dict[str, str] = {}


def _work_sql(connection) -> str:
    """The delivery run's SELECT, written once per database vendor (no ORM compilation per delivery)."""
    sql = _work_sql_cache.get(connection.vendor)
    if sql is None:
        quote = connection.ops.quote_name
        delivery, subscription = Delivery._meta, Subscription._meta
        columns = [f"d.{quote(delivery.get_field(name).column)}" for name in _WORK_DELIVERY_FIELDS]
        columns += [f"s.{quote(subscription.get_field(name).column)}" for name in _WORK_SUBSCRIPTION_FIELDS]
        # Identifiers come from the models' metadata, quoted; the value is bound.
        sql = (
            f"SELECT {', '.join(columns)} FROM {quote(delivery.db_table)} d "  # noqa: S608
            f"LEFT JOIN {quote(subscription.db_table)} s "
            f"ON s.{quote(subscription.pk.column)} = d.{quote(delivery.get_field('subscription').column)} "
            f"WHERE d.{quote(delivery.pk.column)} = %s"
        )
        _work_sql_cache[connection.vendor] = sql
    return sql


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive UTC datetimes to a raw cursor; PostgreSQL aware ones.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def delivery_work(delivery_id: int) -> DeliveryWork | None:
    """The delivery and its subscription's columns a run needs, or None when the delivery is gone."""
    connection = connections["default"]
    with connection.cursor() as cursor:
        cursor.execute(_work_sql(connection), [delivery_id])
        row = cursor.fetchone()
    if row is None:
        return None
    (pk, status, attempts, callback, notification_id, key, subscription_id) = row[:7]
    expires_at, state, failures, resume_after, secret, standard_webhooks, rate_limit = row[7:]
    return DeliveryWork(
        delivery_id=pk,
        status=status,
        attempts=attempts,
        callback=callback,
        notification_id=notification_id,
        uuid=str(key if isinstance(key, uuid.UUID) else uuid.UUID(key)),
        subscription_id=subscription_id,
        expires_at=_aware(expires_at),
        state=state,
        consecutive_failures=failures or 0,
        resume_after=_aware(resume_after),
        secret=secret or "",
        standard_webhooks=bool(standard_webhooks),
        rate_limit=rate_limit or "",
    )
