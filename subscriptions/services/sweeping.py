"""The periodic sweep: re-send what the database says is owed, and recover a broker that lost its data."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from subscriptions.models import Delivery, Notification, SubscriptionRequest
from subscriptions.services import queueing
from websubhub.celery import app as celery_app
from websubhub.hub_settings import hub_settings
from websubhub.queues import QueueName, TaskName

# Every service module logs as "subscriptions.services", the one logger they shared
# before the package was split: log configuration and readers select that name.
logger = logging.getLogger("subscriptions.services")

# Notifications re-sent to spread by one sweep; the next sweep takes the rest.
SWEEP_LIMIT = 1000
# A key the hub keeps in the broker's Redis database. Gone means the broker lost
# its data (restarted empty, flushed): every sweep reads it (one GET), and the
# sweep that finds it gone re-sends everything owed at once (hub_recover).
BROKER_MARKER_KEY = "websubhub:broker-marker"
BROKER_MARKER_OK = "ok"
# While a recovery runs, the marker says so, for at most this many seconds (renewed
# per batch): a recovery cut short by a crash ends with the key, and the next
# sweep starts over.
BROKER_MARKER_RECOVERING = "recovering"
BROKER_RECOVERY_LEASE_SECONDS = 60
# Present while a sweep saw a delivery queue longer than HUB_SWEEP_MAX_QUEUE within
# the last grace period (it expires after it): the tail of a backlog is still queued
# for a while after the queue got short, so no delivery is re-sent until then.
BROKER_BACKLOG_KEY = "websubhub:sweep-backlog"


def hub_sweep() -> int:
    """Re-send the work the database says is owed but the broker may have lost; returns how many tasks were sent.

    Notifications accepted more than the grace period ago that never reached
    spread go to spread again, (un)subscribe requests still pending after it go
    to verification again, and pending deliveries whose due time is more than
    the grace period past go to deliver again. Every task is idempotent; a
    delivery is only re-sent once its queue has been short for a grace period (a
    long queue most likely still holds it) and at most once per grace period.

    First it reads the broker's marker: when the broker lost its data, this
    sweep re-sends everything owed at once instead (hub_recover); while another
    sweep does that, it does nothing.
    """
    marker = broker_marker_read()
    if marker is None:
        if broker_recovery_claim():
            return hub_recover()
        return 0
    if marker == BROKER_MARKER_RECOVERING:
        return 0
    now = timezone.now()
    cutoff = now - timedelta(seconds=hub_settings.HUB_SWEEP_GRACE_SECONDS)
    notification_ids = list(
        Notification.objects.filter(spread_at__isnull=True, created_at__lt=cutoff)
        .order_by("created_at")
        .values_list("id", flat=True)[:SWEEP_LIMIT]
    )
    request_ids = list(
        SubscriptionRequest.objects.filter(state=SubscriptionRequest.State.PENDING, created_at__lt=cutoff)
        .order_by("created_at")
        .values_list("id", flat=True)[:SWEEP_LIMIT]
    )
    with celery_app.producer_or_acquire() as producer:
        for notification_id in notification_ids:
            celery_app.send_task(TaskName.SPREAD, kwargs={"notification_id": notification_id}, producer=producer)
        for request_id in request_ids:
            celery_app.send_task(TaskName.VERIFY, kwargs={"request_id": request_id}, producer=producer)
    delivery_retries: dict[int, int] = {}
    if _delivery_queues_stayed_short():
        delivery_retries = dict(
            Delivery.objects.filter(status=Delivery.Status.PENDING, due_at__lt=cutoff)
            .order_by("due_at")
            .values_list("id", "attempts")[:SWEEP_LIMIT]
        )
    if delivery_retries:
        Delivery.objects.filter(pk__in=list(delivery_retries), status=Delivery.Status.PENDING).update(
            due_at=now, queued=True
        )
        queueing.deliveries_enqueue(list(delivery_retries), retries=delivery_retries)
    sent = len(notification_ids) + len(request_ids) + len(delivery_retries)
    if sent:
        logger.warning(
            "sweep re-sent %s notifications to spread, %s requests to verification, %s deliveries",
            len(notification_ids),
            len(request_ids),
            len(delivery_retries),
        )
    return sent


def _delivery_queues_stayed_short() -> bool:
    """Whether the delivery queues are short now and were at every sweep of the last grace period.

    A delivery overdue behind a long queue is most likely still in it, and so is
    one at the tail of a backlog that just got short: re-sending it would queue a
    second message. The memory of a long queue is kept in a Redis broker (another
    broker: the queues now).
    """
    long = max(queue_depth(QueueName.DELIVER), queue_depth(QueueName.DELIVER_RETRY)) > hub_settings.HUB_SWEEP_MAX_QUEUE
    with _broker_redis() as client:
        if client is None:
            return not long
        if long:
            client.set(BROKER_BACKLOG_KEY, "1", ex=max(1, hub_settings.HUB_SWEEP_GRACE_SECONDS))
            return False
        return not client.exists(BROKER_BACKLOG_KEY)


@contextmanager
def _broker_redis() -> Iterator[Any]:
    """A client of the broker's own Redis database (kombu's connection settings), or None for another broker.

    RabbitMQ keeps durable queues across restarts and the filesystem broker lives
    on one machine's disk: the marker is only kept on Redis, the broker that loses
    everything when it restarts without persistence.
    """
    with celery_app.pool.acquire(block=True) as connection:
        if connection.transport.driver_type != "redis":
            yield None
            return
        with connection.default_channel.conn_or_acquire() as client:
            yield client


def broker_marker_read() -> str | None:
    """The broker's marker: "ok", "recovering", or None when it is gone ("ok" for a broker without one)."""
    with _broker_redis() as client:
        if client is None:
            return BROKER_MARKER_OK
        value = client.get(BROKER_MARKER_KEY)
    return None if value is None else value.decode()


def broker_recovery_claim() -> bool:
    """Whether this sweep is the one to recover a broker that lost its marker (set-if-absent, with a lease)."""
    with _broker_redis() as client:
        if client is None:
            return False
        return bool(client.set(BROKER_MARKER_KEY, BROKER_MARKER_RECOVERING, nx=True, ex=BROKER_RECOVERY_LEASE_SECONDS))


def _broker_recovery_renew(*, done: bool = False) -> bool:
    """Renew the recovery's lease, or mark the broker recovered; False when the marker went meanwhile.

    The broker lost its data again during the recovery: the marker stays gone,
    so the next sweep recovers again.
    """
    with _broker_redis() as client:
        if client is None:
            return True
        if done:
            return bool(client.set(BROKER_MARKER_KEY, BROKER_MARKER_OK, xx=True))
        return bool(client.set(BROKER_MARKER_KEY, BROKER_MARKER_RECOVERING, xx=True, ex=BROKER_RECOVERY_LEASE_SECONDS))


def hub_recover() -> int:
    """Re-send at once everything the database says is owed (the broker lost its messages); returns how many.

    Every notification never spread goes to spread, every pending (un)subscribe
    request to verification, and every pending delivery due before the grace
    period ends to deliver (one not yet due with a countdown to its due time; a
    later one is left to the regular sweep). No grace period and no queue length
    check: a broker that lost its data holds none of this. Runs when a sweep finds
    the marker gone, which is also the first sweep of a hub that never set it: that
    once, deliveries still queued get a second message, which finds them settled
    (they stand behind the first in the queue) and does nothing.
    """
    now = timezone.now()
    horizon = now + timedelta(seconds=hub_settings.HUB_SWEEP_GRACE_SECONDS)
    notification_ids = list(Notification.objects.filter(spread_at__isnull=True).values_list("id", flat=True))
    request_ids = list(
        SubscriptionRequest.objects.filter(state=SubscriptionRequest.State.PENDING).values_list("id", flat=True)
    )
    with celery_app.producer_or_acquire() as producer:
        for notification_id in notification_ids:
            celery_app.send_task(TaskName.SPREAD, kwargs={"notification_id": notification_id}, producer=producer)
        for request_id in request_ids:
            celery_app.send_task(TaskName.VERIFY, kwargs={"request_id": request_id}, producer=producer)
    deliveries = 0
    rows = (
        # Those the broker held; the ones waiting in the database are hub.enqueue_due's.
        Delivery.objects.filter(status=Delivery.Status.PENDING, queued=True, due_at__lte=horizon)
        .order_by("due_at")
        .values_list("id", "attempts", "due_at")
        .iterator(chunk_size=queueing.SPREAD_BATCH)
    )
    batch: list[tuple[int, int, datetime]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= queueing.SPREAD_BATCH:
            deliveries += _deliveries_resend(batch, now=now)
            batch = []
            _broker_recovery_renew()
    deliveries += _deliveries_resend(batch, now=now)
    recovered = _broker_recovery_renew(done=True)
    logger.warning(
        "the broker lost its data (marker gone): re-sent %s notifications to spread, %s requests to verification, "
        "%s deliveries%s",
        len(notification_ids),
        len(request_ids),
        deliveries,
        "" if recovered else "; it lost them again meanwhile, the next sweep starts over",
    )
    return len(notification_ids) + len(request_ids) + deliveries


def _deliveries_resend(rows: list[tuple[int, int, datetime]], *, now: datetime) -> int:
    if rows:
        queueing.deliveries_enqueue(
            [delivery_id for delivery_id, _, _ in rows],
            retries={delivery_id: attempts for delivery_id, attempts, _ in rows},
            countdowns={delivery_id: (due - now).total_seconds() for delivery_id, _, due in rows if due > now},
        )
    return len(rows)


def queue_depth(queue: str) -> int:
    """Messages waiting in a broker queue (0 when the broker cannot tell)."""
    try:
        with celery_app.connection_for_write() as connection:
            return connection.default_channel.queue_declare(queue=queue, passive=True).message_count
    except Exception:  # noqa: BLE001 - a missing queue or a transport without counts: assume empty
        return 0
