"""Counts and estimates for the admin's pages, the dashboard and /metrics.

Grouped queries whose cost follows a window or a page, not the size of a table.
"""

import json
from datetime import datetime
from typing import NamedTuple

from django.db import connections
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncMinute

from subscriptions.models import Delivery, Subscription


def estimated_rows(queryset: QuerySet) -> int | None:
    """The PostgreSQL planner's row estimate for a query, from the table's statistics: no scan.

    None on other databases, which have no such estimate. The admin's paginator
    and the /metrics subscription counts both count large tables with it.
    """
    if connections[queryset.db].vendor != "postgresql":
        return None
    plan = json.loads(queryset.explain(format="json"))
    return int(plan[0]["Plan"]["Plan Rows"])


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
