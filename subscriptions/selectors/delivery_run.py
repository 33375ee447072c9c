"""The deliver task's hot path reads: a delivery with its subscription's columns in one raw statement, and the
notification's payload from a per-process cache.

Performance-critical (bench/RESULTS.md, tests/unit/test_deliver_queries.py): change the SQL or the cache only
with the benchmark.
"""

import threading
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from typing import NamedTuple

from django.db import connections

from subscriptions.models import Delivery, Notification, Subscription


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
    # False while the delivery waits in the database for due_at (parked, or a long retry wait).
    queued: bool
    due_at: datetime
    # The subscription's columns (None when it ended).
    expires_at: datetime | None
    state: str | None
    consecutive_failures: int
    resume_after: datetime | None
    secret: str
    standard_webhooks: bool
    rate_limit: str
    # A secret rotation's overlap: the replaced secret and when it stops signing.
    previous_secret: str
    previous_secret_expires_at: datetime | None


_WORK_DELIVERY_FIELDS = (
    "id",
    "status",
    "attempts",
    "callback",
    "notification",
    "uuid",
    "subscription",
    "queued",
    "due_at",
)
_WORK_SUBSCRIPTION_FIELDS = (
    "expires_at",
    "state",
    "consecutive_failures",
    "resume_after",
    "secret",
    "standard_webhooks",
    "rate_limit",
    "previous_secret",
    "previous_secret_expires_at",
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
    (pk, status, attempts, callback, notification_id, key, subscription_id, queued, due_at) = row[:9]
    expires_at, state, failures, resume_after, secret, standard_webhooks, rate_limit = row[9:16]
    previous_secret, previous_secret_expires_at = row[16:]
    return DeliveryWork(
        delivery_id=pk,
        status=status,
        attempts=attempts,
        callback=callback,
        notification_id=notification_id,
        uuid=str(key if isinstance(key, uuid.UUID) else uuid.UUID(key)),
        subscription_id=subscription_id,
        queued=bool(queued),
        due_at=_aware(due_at),
        expires_at=_aware(expires_at),
        state=state,
        consecutive_failures=failures or 0,
        resume_after=_aware(resume_after),
        secret=secret or "",
        standard_webhooks=bool(standard_webhooks),
        rate_limit=rate_limit or "",
        previous_secret=previous_secret or "",
        previous_secret_expires_at=_aware(previous_secret_expires_at),
    )
