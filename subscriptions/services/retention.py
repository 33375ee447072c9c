"""Retention: purge what is past HUB_RETENTION_DAYS, and erase one subscription's history.

Everything goes in bounded batches (PURGE_BATCH rows per statement, one short
transaction each), never one huge transaction, so deliveries keep flowing while
a purge runs. A pending delivery is never purged, and neither is its
notification nor its attempt log.

Races with the writers, and why they are safe:
- an operator retry turning a failed delivery pending again: the purge takes
  its rows under a row lock (SKIP LOCKED), re-reading their status;
- a replay adding a delivery to a notification being purged: a replay locks the
  notifications it replays (services.replay), the purge skips locked ones, and
  deletes a notification only when no delivery of it is left; the foreign key
  stops anything that slipped through (IntegrityError: the notification stays
  for the next run).
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Exists, Max, OuterRef, Q, QuerySet
from django.utils import timezone

from subscriptions.models import Delivery, DeliveryAttempt, Notification, Subscription, SubscriptionRequest
from subscriptions.services import idempotency
from websubhub.hub_settings import hub_settings

logger = logging.getLogger("subscriptions.services")

# Rows per statement: a few thousand.
PURGE_BATCH = 2000
# Notifications examined per round; their deliveries still go PURGE_BATCH at a time.
NOTIFICATION_BATCH = 500
# The periodic task stops after this many seconds (well below the task's soft time
# limit); the next run goes on where it stopped.
TASK_TIME_BUDGET = 90.0

SETTLED = [Delivery.Status.DELIVERED, Delivery.Status.FAILED, Delivery.Status.CANCELLED]


@dataclass
class PurgeCounts:
    """Rows removed (or, for a plan, that would be)."""

    notifications: int = 0
    deliveries: int = 0
    attempts: int = 0
    subscription_requests: int = 0
    idempotency_keys: int = 0

    @property
    def rows(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))

    def __str__(self) -> str:
        return ", ".join(f"{getattr(self, f.name)} {f.name.replace('_', ' ')}" for f in fields(self))


@dataclass(frozen=True)
class Cutoffs:
    """Records older than these go; None: that kind is kept."""

    notifications: datetime | None
    attempts: datetime | None


def retention_cutoffs(*, older_than_days: int | None = None, now: datetime | None = None) -> Cutoffs:
    """The cutoffs of HUB_RETENTION_DAYS and HUB_ATTEMPT_RETENTION_DAYS, or of `older_than_days` (hub_purge).

    Attempts keep their own, shorter, retention when it is set below the other.
    """
    now = now or timezone.now()
    days = hub_settings.HUB_RETENTION_DAYS if older_than_days is None else older_than_days
    attempt_days = hub_settings.HUB_ATTEMPT_RETENTION_DAYS
    if days and attempt_days >= days:
        attempt_days = 0  # they go with their deliveries
    return Cutoffs(
        notifications=now - timedelta(days=days) if days else None,
        attempts=now - timedelta(days=attempt_days) if attempt_days else None,
    )


def retention_window_start(*, now: datetime | None = None) -> datetime | None:
    """The oldest time whose notifications the hub still keeps for sure; None when it keeps everything."""
    return retention_cutoffs(now=now).notifications


def _pending_delivery() -> Exists:
    return Exists(Delivery.objects.filter(notification_id=OuterRef("pk"), status=Delivery.Status.PENDING))


def _notifications_due(cutoff: datetime) -> QuerySet[Notification]:
    """Notifications published before cutoff, spread, with no pending delivery."""
    return Notification.objects.filter(created_at__lt=cutoff, spread_at__isnull=False).exclude(_pending_delivery())


def _attempts_due(cutoff: datetime) -> QuerySet[DeliveryAttempt]:
    """Attempts started before cutoff, of deliveries no longer pending."""
    return DeliveryAttempt.objects.filter(started_at__lt=cutoff).exclude(delivery__status=Delivery.Status.PENDING)


def _requests_due(cutoff: datetime) -> QuerySet[SubscriptionRequest]:
    """(Un)subscribe requests completed (verified, failed, denied) before cutoff."""
    return SubscriptionRequest.objects.filter(created_at__lt=cutoff).exclude(state=SubscriptionRequest.State.PENDING)


def retention_plan(*, older_than_days: int | None = None, now: datetime | None = None) -> PurgeCounts:
    """What a purge would remove now (hub_purge --dry-run and its progress bar's total)."""
    now = now or timezone.now()
    cutoffs = retention_cutoffs(older_than_days=older_than_days, now=now)
    plan = PurgeCounts(idempotency_keys=idempotency.idempotency_keys_expired(now=now).count())
    attempts = Q(pk__in=[])
    if cutoffs.notifications is not None:
        due = _notifications_due(cutoffs.notifications)
        plan.notifications = due.count()
        plan.deliveries = Delivery.objects.filter(notification__in=due).count()
        plan.subscription_requests = _requests_due(cutoffs.notifications).count()
        attempts |= Q(delivery__notification__in=due)
    if cutoffs.attempts is not None:
        attempts |= Q(pk__in=_attempts_due(cutoffs.attempts).values("pk"))
    plan.attempts = DeliveryAttempt.objects.filter(attempts).count()
    return plan


def retention_purge(
    *,
    older_than_days: int | None = None,
    batch: int = PURGE_BATCH,
    time_budget: float | None = None,
    progress: Callable[[PurgeCounts], None] | None = None,
    now: datetime | None = None,
) -> PurgeCounts:
    """Remove what is past retention, in batches; returns what was removed.

    `progress(counts so far)` is called after every batch. With `time_budget`
    (seconds) it stops between batches once that much time has passed; what is
    left goes at the next run.
    """
    now = now or timezone.now()
    cutoffs = retention_cutoffs(older_than_days=older_than_days, now=now)
    counts = PurgeCounts()
    started = time.monotonic()

    def report() -> bool:
        """Report progress; False when the time budget is spent."""
        if progress is not None:
            progress(counts)
        return time_budget is None or time.monotonic() - started < time_budget

    # Each kind gets at least one batch per run, then goes on while time is left.
    counts.idempotency_keys = idempotency.idempotency_keys_expired_delete(batch=batch, now=now)
    if cutoffs.attempts is not None:
        _attempts_purge(cutoffs.attempts, counts, batch=batch, report=report)
    if cutoffs.notifications is not None:
        counts.subscription_requests += _in_batches(_requests_due(cutoffs.notifications), batch, report)
        _notifications_purge(cutoffs.notifications, counts, batch=batch, report=report)
    report()
    if counts.rows:
        logger.info("retention purge removed %s", counts)
    return counts


def _in_batches(queryset: QuerySet, batch: int, report: Callable[[], bool]) -> int:
    """Delete what queryset selects (a model without dependents), `batch` rows per statement."""
    removed = 0
    while True:
        ids = list(queryset.values_list("pk", flat=True)[:batch])
        if not ids:
            return removed
        removed += queryset.model.objects.filter(pk__in=ids).delete()[0]
        if not report():
            return removed


def _attempts_purge(cutoff: datetime, counts: PurgeCounts, *, batch: int, report: Callable[[], bool]) -> None:
    while True:
        ids = list(_attempts_due(cutoff).values_list("pk", flat=True)[:batch])
        if not ids:
            return
        counts.attempts += DeliveryAttempt.objects.filter(pk__in=ids).delete()[0]
        if not report():
            return


def _notifications_purge(cutoff: datetime, counts: PurgeCounts, *, batch: int, report: Callable[[], bool]) -> None:
    """Notifications past cutoff with every delivery settled: their deliveries and attempts, then themselves.

    Walks them by id: the highest id published before cutoff (read once, through
    the created_at index) bounds the walk, so each round reads an id range
    through the primary key.
    """
    boundary = Notification.objects.filter(created_at__lt=cutoff).aggregate(last=Max("pk"))["last"]
    if boundary is None:
        return
    cursor = 0
    while True:
        ids = list(
            _notifications_due(cutoff)
            .filter(pk__gt=cursor, pk__lte=boundary)
            .order_by("pk")
            .values_list("pk", flat=True)[:NOTIFICATION_BATCH]
        )
        if not ids:
            return
        cursor = ids[-1]
        if not _deliveries_purge(Q(notification_id__in=ids, status__in=SETTLED), counts, batch=batch, report=report):
            return
        counts.notifications += _notifications_without_deliveries_delete(ids)
        if not report():
            return


def _deliveries_purge(
    which: Q, counts: PurgeCounts, *, batch: int, report: Callable[[], bool], skip_locked: bool = True
) -> bool:
    """Delete the deliveries matching `which` and their attempts, `batch` at a time; False: out of time.

    Rows are taken under a row lock and their condition is read under it: a
    delivery an operator turned pending again stays. The purge skips locked
    rows (the next run takes them); an erasure waits for them.
    """
    while True:
        with transaction.atomic():
            locked = Delivery.objects.select_for_update(skip_locked=skip_locked)
            ids = list(locked.filter(which).values_list("pk", flat=True)[:batch])
            if ids:
                counts.attempts += DeliveryAttempt.objects.filter(delivery_id__in=ids).delete()[0]
                counts.deliveries += _rows_delete(Delivery, ids)
        if not ids:
            return True
        if not report():
            return False


def _notifications_without_deliveries_delete(ids: list[int]) -> int:
    """Delete those of the notifications `ids` that no delivery references any more (none locked by a replay)."""
    try:
        with transaction.atomic():
            gone = list(
                Notification.objects.select_for_update(skip_locked=True)
                .filter(pk__in=ids)
                .exclude(Exists(Delivery.objects.filter(notification_id=OuterRef("pk"))))
                .values_list("pk", flat=True)
            )
            return _rows_delete(Notification, gone)
    except IntegrityError:
        # A delivery was added to one of them meanwhile: they all stay for the next run.
        logger.info("retention purge: a notification among %s..%s gained a delivery; kept", ids[0], ids[-1])
        return 0


def _rows_delete(model: type[Delivery] | type[Notification], ids: list[int]) -> int:
    """DELETE the rows `ids` of `model` in one statement; the number deleted.

    Not QuerySet.delete(): its collector reads every row back, looks again for
    what references them and deletes 100 ids per statement, which made a purge
    spend most of its CPU in Django (bench/: the purge scenario). The callers
    have removed, under lock, what references these rows (a delivery's attempts,
    the only model that references a delivery; a notification's deliveries); a
    reference that slips in meanwhile fails the transaction's foreign key check
    instead of being cascaded away.
    """
    return model.objects.filter(pk__in=ids)._raw_delete(model.objects.db)


def subscription_erase(*, subscription: Subscription, batch: int = PURGE_BATCH) -> PurgeCounts:
    """Remove a subscription with every delivery and attempt it had, and its completed (un)subscribe requests.

    Its deliveries go first, in batches (pending ones too: the subscription is
    going), then the subscription with whatever a spread added meanwhile, in one
    transaction. The notifications stay for their other subscribers; retention
    removes them in time.
    """
    counts = PurgeCounts()
    which = Q(subscription_id=subscription.pk)
    _deliveries_purge(which, counts, batch=batch, report=lambda: True, skip_locked=False)
    with transaction.atomic():
        _deliveries_purge(which, counts, batch=batch, report=lambda: True, skip_locked=False)
        requests = SubscriptionRequest.objects.filter(topic_key=subscription.topic_key, callback=subscription.callback)
        counts.subscription_requests = requests.exclude(state=SubscriptionRequest.State.PENDING).delete()[0]
        Subscription.objects.filter(pk=subscription.pk).delete()
    logger.info("subscription %s erased with its history: %s", subscription.pk, counts)
    return counts
