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
from django.db.models import Count, Q, QuerySet, Subquery
from django.db.models.functions import Length, TruncMinute
from django.utils import timezone

from subscriptions.models import Delivery, DeliveryAttempt, Notification, Subscription

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


def subscriptions_recent_figures(*, subscription_ids: list[int], since: datetime) -> dict[int, dict[str, int]]:
    """Per subscription: its dead letters, and its deliveries last attempted since `since` that succeeded or not.

    One grouped query over the given subscriptions (a list page): the (subscription,
    status) index for the dead letters, the last-attempt time for the rest.
    "failing" counts a failed delivery or a pending one whose last attempt failed.
    """
    recent = Q(last_attempt_at__gte=since)
    rows = (
        Delivery.objects.filter(subscription_id__in=subscription_ids)
        .filter(Q(status=Delivery.Status.FAILED) | recent)
        .order_by()
        .values("subscription_id")
        .annotate(
            failed=Count("id", filter=Q(status=Delivery.Status.FAILED)),
            succeeded=Count("id", filter=recent & Q(status=Delivery.Status.DELIVERED)),
            failing=Count(
                "id",
                filter=recent & (Q(status=Delivery.Status.FAILED) | Q(status=Delivery.Status.PENDING, attempts__gt=0)),
            ),
        )
    )
    empty = {"failed": 0, "succeeded": 0, "failing": 0}
    figures = {pk: dict(empty) for pk in subscription_ids}
    for row in rows:
        figures[row.pop("subscription_id")] = row
    return figures


def notifications_delivery_counts(*, notification_ids: list[int]) -> dict[int, dict[str, int]]:
    """Deliveries by status for each notification of a list page: one grouped query on (notification, status)."""
    statuses = Delivery.Status.values
    counts = {pk: dict.fromkeys(statuses, 0) for pk in notification_ids}
    rows = (
        Delivery.objects.filter(notification_id__in=notification_ids)
        .order_by()
        .values_list("notification_id", "status")
        .annotate(n=Count("id"))
    )
    for notification_id, status, n in rows:
        counts[notification_id][status] = n
    return counts


class MinuteCount(NamedTuple):
    minute: datetime
    outcome: str  # delivered, retrying or failed
    count: int


# What a delivery's status says of its last attempt, for the dashboard's chart:
# a pending delivery that was attempted is being retried.
CHART_OUTCOMES = {
    Delivery.Status.DELIVERED: "delivered",
    Delivery.Status.PENDING: "retrying",
    Delivery.Status.FAILED: "failed",
}


def deliveries_per_minute(*, since: datetime) -> list[MinuteCount]:
    """Deliveries last attempted since `since`, per minute and outcome: one grouped query, at most 3 rows a minute.

    It reads the (status, last_attempt_at) index by range, so its cost follows the
    deliveries of the window, not the size of the table. Each delivery counts once,
    at its last attempt: delivered, failed for good, or pending after a failed
    attempt (retrying).
    """
    rows = (
        Delivery.objects.filter(status__in=list(CHART_OUTCOMES), last_attempt_at__gte=since)
        .order_by()
        .annotate(minute=TruncMinute("last_attempt_at"))
        .values_list("minute", "status")
        .annotate(n=Count("*"))
    )
    return [MinuteCount(minute, CHART_OUTCOMES[status], n) for minute, status, n in rows]


class PendingDepths(NamedTuple):
    due: int  # pending and due now: in a worker's queue or about to be
    scheduled: int  # pending and due later: a retry's backoff, a rate limit, a parked delivery
    held: int  # pending for a paused subscription (part of the two above)


def pending_depths(*, now: datetime) -> PendingDepths:
    """The database's side of the queues: pending deliveries due now, due later, and held by a pause (one query).

    It reads the partial index of pending deliveries, so it follows the backlog, not the table.
    """
    counts = Delivery.objects.filter(status=Delivery.Status.PENDING).aggregate(
        due=Count("due_at", filter=Q(due_at__lte=now)),
        scheduled=Count("due_at", filter=Q(due_at__gt=now)),
        held=Count("due_at", filter=Q(subscription__state=Subscription.State.PAUSED)),
    )
    return PendingDepths(counts["due"], counts["scheduled"], counts["held"])


class Attention(NamedTuple):
    subscription: Subscription
    failed: int  # dead letters of the last hour
    succeeded: int  # deliveries of the last hour
    failing: int  # failed or retrying deliveries of the last hour


class AttentionList(NamedTuple):
    rows: list[Attention]  # paused first (newest pause first), then by failing deliveries
    paused: int  # paused subscriptions in all
    failing: int  # subscriptions over the failure threshold in the window, in all (some may be paused too)


def subscriptions_needing_attention(*, since: datetime, failure_rate: float, limit: int) -> AttentionList:
    """Subscriptions to look at now: paused, or with dead letters or a failure rate above `failure_rate` (0-1)
    among their deliveries attempted since `since`. At most `limit` rows; four queries whatever the table sizes
    (the window's deliveries by subscription, the paused ones by their partial index, their count, the rows)."""
    recent = (
        Delivery.objects.filter(status__in=list(CHART_OUTCOMES), last_attempt_at__gte=since)
        .exclude(subscription_id=None)
        .order_by()
        .values_list("subscription_id")
        .annotate(
            failed=Count("status", filter=Q(status=Delivery.Status.FAILED)),
            succeeded=Count("status", filter=Q(status=Delivery.Status.DELIVERED)),
            failing=Count("status", filter=~Q(status=Delivery.Status.DELIVERED)),
        )
    )
    figures = {pk: (failed, succeeded, failing) for pk, failed, succeeded, failing in recent}
    failing_ids = sorted(
        (
            pk
            for pk, (failed, succeeded, failing) in figures.items()
            if failed or failing > failure_rate * (succeeded + failing)
        ),
        key=lambda pk: -figures[pk][2],
    )
    paused = Subscription.objects.filter(state=Subscription.State.PAUSED)
    paused_ids = list(paused.order_by("-paused_at", "-id").values_list("id", flat=True)[:limit])
    wanted = list(dict.fromkeys(paused_ids + failing_ids))[:limit]
    rows = Subscription.objects.defer("secret").in_bulk(wanted)
    found = [Attention(rows[pk], *figures.get(pk, (0, 0, 0))) for pk in wanted if pk in rows]
    return AttentionList(found, paused.count(), len(failing_ids))


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
    # A secret rotation's overlap: the replaced secret and when it stops signing.
    previous_secret: str
    previous_secret_expires_at: datetime | None


_WORK_DELIVERY_FIELDS = ("id", "status", "attempts", "callback", "notification", "uuid", "subscription")
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
    (pk, status, attempts, callback, notification_id, key, subscription_id) = row[:7]
    expires_at, state, failures, resume_after, secret, standard_webhooks, rate_limit = row[7:14]
    previous_secret, previous_secret_expires_at = row[14:]
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
        previous_secret=previous_secret or "",
        previous_secret_expires_at=_aware(previous_secret_expires_at),
    )
