"""Writes: subscribing, verifying, publishing, spreading, delivering, expiring.

Tasks and views are thin and call these. Every function is keyword-only and
safe to run twice for the same input (tasks use acks_late).
"""

import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from subscriptions import delivery, http, metrics, netguard, ratelimit, verification
from subscriptions.models import (
    MAX_CALLBACK_LENGTH,
    MAX_SECRET_BYTES,
    Delivery,
    DeliveryAttempt,
    Notification,
    Subscription,
    SubscriptionRequest,
)
from subscriptions.selectors import notification_payload, subscriptions_matching
from subscriptions.topics import InvalidTopic, has_space_or_control, publish_keys, subscription_key
from websubhub.celery import app as celery_app
from websubhub.db import connection_release
from websubhub.queues import QueueName, TaskName

logger = logging.getLogger(__name__)

# Deliveries created and enqueued per transaction while spreading.
SPREAD_BATCH = 500
# A place among a callback's requests in flight is held at most the HTTP
# total timeout plus this (seconds), and a delivery that found no place looks again
# within this many seconds.
IN_FLIGHT_LEASE_MARGIN = 5.0
IN_FLIGHT_RECHECK_SECONDS = 1.0
# How often deliveries parked behind an operator's pause look again (seconds);
# a resume sends them at once.
OPERATOR_PAUSE_RECHECK_SECONDS = 3600
# How long one probe of a paused subscription holds the claim (seconds): longer
# than an attempt can take, so a crashed probe frees it for the next delivery.
PROBE_WINDOW_SECONDS = 60
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


class HubError(Exception):
    """A request the hub refuses; `status` is the 4xx to answer with and the message says why.

    `field` is the form field it concerns (hub.callback), named in the message as /hub
    spells it; the JSON API answers under its own name for the field (see api/errors.py).
    """

    def __init__(self, message: str, status: int = 400, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field


class DeliveryFailed(Exception):
    """A delivery attempt failed in a way worth retrying (Celery's autoretry catches it)."""


# --- Validation ------------------------------------------------------------------


def lease_seconds_parse(raw: str) -> int:
    """hub.lease_seconds as sent in a form: a positive whole number of seconds."""
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit() or int(raw) <= 0:
        raise HubError(
            f"hub.lease_seconds must be a positive whole number of seconds, not {raw[:40]!r}", field="hub.lease_seconds"
        )
    return int(raw)


def lease_clamp(requested: int | None) -> int:
    """The lease granted: the default when none is asked, else clamped to the configured bounds."""
    if requested is None:
        return settings.HUB_LEASE_SECONDS_DEFAULT
    return max(settings.HUB_LEASE_SECONDS_MIN, min(settings.HUB_LEASE_SECONDS_MAX, requested))


def callback_validate(callback: str) -> None:
    if not callback:
        raise HubError("hub.callback is empty", field="hub.callback")
    if len(callback) > MAX_CALLBACK_LENGTH:
        raise HubError(f"hub.callback is longer than {MAX_CALLBACK_LENGTH} characters", field="hub.callback")
    if has_space_or_control(callback):
        raise HubError("hub.callback contains whitespace or control characters", field="hub.callback")
    try:
        parts = urlsplit(callback)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise HubError(f"hub.callback is not a valid URL: {exc}", field="hub.callback") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise HubError("hub.callback must be an http:// or https:// URL", field="hub.callback")
    if not parts.hostname:
        raise HubError("hub.callback URL has no host", field="hub.callback")
    try:
        netguard.check_url_with_settings(callback)
    except netguard.ForbiddenDestination as exc:
        raise HubError(f"hub.callback refused: {exc}", field="hub.callback") from None


def secret_validate(secret: str) -> None:
    if len(secret.encode("utf-8")) > MAX_SECRET_BYTES:
        raise HubError(f"hub.secret must be shorter than 200 bytes (at most {MAX_SECRET_BYTES})", field="hub.secret")
    if "\x00" in secret:
        # PostgreSQL text cannot hold NUL: storing it would be a 500, not a 400.
        raise HubError("hub.secret cannot contain a NUL character", field="hub.secret")


def topic_key_for_subscription(topic: str) -> str:
    try:
        return subscription_key(topic)
    except InvalidTopic as exc:
        raise HubError(str(exc), field="hub.topic") from None


def topic_keys_for_publish(topic: str) -> list[str]:
    try:
        return publish_keys(topic)
    except InvalidTopic as exc:
        raise HubError(str(exc), field="hub.topic") from None


@lru_cache(maxsize=8)
def _denylist(patterns: tuple[str, ...]) -> list[re.Pattern[str]]:
    return [re.compile(pattern) for pattern in patterns]


def topic_denied_reason(topic: str) -> str:
    """Why the hub refuses subscriptions to topic, or "" when it does not."""
    for pattern in _denylist(tuple(settings.HUB_TOPIC_DENYLIST)):
        if pattern.search(topic):
            return "subscriptions to this topic are not allowed by this hub"
    return ""


# --- Subscribing -------------------------------------------------------------------


def subscription_request(
    *,
    mode: str,
    topic: str,
    callback: str,
    lease_seconds: int | None = None,
    secret: str = "",
) -> SubscriptionRequest:
    """Record a (un)subscribe request and enqueue its verification; raises HubError when invalid.

    Nothing about the subscription changes here: only a verified request does.
    """
    if mode not in SubscriptionRequest.Mode.values:
        raise HubError(f"hub.mode must be subscribe, unsubscribe or publish, not {mode[:40]!r}", field="hub.mode")
    topic_key = topic_key_for_subscription(topic)
    callback_validate(callback)
    if mode == SubscriptionRequest.Mode.SUBSCRIBE:
        secret_validate(secret)
        if lease_seconds is not None and lease_seconds <= 0:
            raise HubError("hub.lease_seconds must be a positive whole number of seconds", field="hub.lease_seconds")
    else:
        # WebSub §5.1: lease and secret mean nothing to an unsubscribe.
        lease_seconds, secret = None, ""
        if not Subscription.objects.filter(topic_key=topic_key, callback=callback).exists():
            raise HubError("there is no subscription of this callback to this topic", status=404)

    with transaction.atomic():
        request = SubscriptionRequest.objects.create(
            mode=mode,
            topic=topic,
            topic_key=topic_key,
            callback=callback,
            lease_seconds=lease_clamp(lease_seconds) if mode == SubscriptionRequest.Mode.SUBSCRIBE else None,
            secret=secret,
        )
        request_id = request.pk
        transaction.on_commit(
            lambda: celery_app.send_task(TaskName.VERIFY, kwargs={"request_id": request_id}), robust=True
        )
    logger.info("subscription request %s: %s topic=%s callback_host=%s", request_id, mode, topic, _host(callback))
    return request


def subscription_verify(*, request_id: int) -> SubscriptionRequest | None:
    """Verify one pending request with its subscriber, then apply it; a no-op when it is no longer pending."""
    request = SubscriptionRequest.objects.filter(pk=request_id, state=SubscriptionRequest.State.PENDING).first()
    if request is None:
        return None

    if request.mode == SubscriptionRequest.Mode.SUBSCRIBE:
        reason = topic_denied_reason(request.topic)
        if reason:
            connection_release()  # not held while the callback answers
            answer = verification.notify_denied(request.callback, request.topic, reason)
            _request_complete(request, SubscriptionRequest.State.DENIED, reason, answer.status_code)
            logger.info("subscription request %s denied: %s", request.pk, reason)
            return request

    challenge = verification.new_challenge()
    params = {"hub.mode": request.mode, "hub.topic": request.topic, "hub.challenge": challenge}
    if request.mode == SubscriptionRequest.Mode.SUBSCRIBE:
        params["hub.lease_seconds"] = str(request.lease_seconds)
    connection_release()  # not held while the callback answers
    answer = verification.verify(request.callback, params, challenge)

    with transaction.atomic():
        request = SubscriptionRequest.objects.select_for_update().get(pk=request.pk)
        if request.state != SubscriptionRequest.State.PENDING:
            return request
        if not answer.ok:
            _request_complete(request, SubscriptionRequest.State.FAILED, answer.reason, answer.status_code)
            logger.info("subscription request %s failed verification: %s", request.pk, answer.reason)
            return request
        newer = SubscriptionRequest.objects.filter(
            topic_key=request.topic_key,
            callback=request.callback,
            pk__gt=request.pk,
            state=SubscriptionRequest.State.VERIFIED,
        ).exists()
        if newer:
            # A later request for the same pair was applied first; this one must not undo it.
            _request_complete(request, SubscriptionRequest.State.FAILED, "superseded by a newer request", None)
            return request
        now = timezone.now()
        if request.mode == SubscriptionRequest.Mode.SUBSCRIBE:
            subscription, created = Subscription.objects.update_or_create(
                topic_key=request.topic_key,
                callback=request.callback,
                defaults={
                    "topic": request.topic,
                    "secret": request.secret,
                    "lease_seconds": request.lease_seconds,
                    "verified_at": now,
                    "expires_at": now + timedelta(seconds=request.lease_seconds),
                    "state": Subscription.State.ACTIVE,
                },
            )
            logger.info(
                "subscription %s %s by request %s, lease %ss",
                subscription.pk,
                "created" if created else "renewed",
                request.pk,
                request.lease_seconds,
            )
        else:
            Subscription.objects.filter(topic_key=request.topic_key, callback=request.callback).delete()
            logger.info("subscription request %s: unsubscribed", request.pk)
        _request_complete(request, SubscriptionRequest.State.VERIFIED, "", answer.status_code)
    return request


def _request_complete(request: SubscriptionRequest, state: str, reason: str, status_code: int | None) -> None:
    request.state = state
    request.reason = reason[:500]
    request.response_status = status_code
    request.completed_at = timezone.now()
    # The secret is only needed until the subscription holds it.
    request.secret = ""
    request.save(update_fields=["state", "reason", "response_status", "completed_at", "secret", "updated_at"])
    metrics.verification_outcome(state)


def subscription_delete(*, subscription: Subscription) -> None:
    """Remove a subscription at once (operator action); its pending deliveries are cancelled when next tried."""
    subscription.delete()


def subscriptions_expire() -> int:
    """Remove every subscription whose lease has ended; returns how many."""
    _, per_model = Subscription.objects.filter(expires_at__lte=timezone.now()).delete()
    count = per_model.get(Subscription._meta.label, 0)
    if count:
        logger.info("expired %s subscriptions", count)
    return count


# --- Publishing and spreading ----------------------------------------------------------


def notification_publish(*, topic: str, content: bytes, content_type: str) -> Notification:
    """Store a notification and enqueue its spread once committed; raises HubError when invalid.

    The row is the record: if the broker cannot take the spread message now,
    the periodic sweep sends it later.
    """
    topic_keys_for_publish(topic)
    if len(content) > settings.HUB_MAX_CONTENT_BYTES:
        raise HubError(
            f"content is larger than HUB_MAX_CONTENT_BYTES ({settings.HUB_MAX_CONTENT_BYTES} bytes)",
            413,
            field="content",
        )
    with transaction.atomic():
        notification = Notification.objects.create(topic=topic, content=content, content_type=content_type)
        notification_id = notification.pk
        transaction.on_commit(lambda: _send_spread(notification_id), robust=True)
    logger.info("notification %s published on %s (%s bytes)", notification_id, topic, len(content))
    metrics.notification_accepted()
    return notification


def notification_publish_json(*, topic: str, content: Any) -> Notification:
    body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return notification_publish(topic=topic, content=body, content_type="application/json")


def _send_spread(notification_id: int) -> None:
    celery_app.send_task(TaskName.SPREAD, kwargs={"notification_id": notification_id})


def notification_spread(*, notification_id: int) -> int:
    """Create one delivery per matching callback and enqueue them, in batches; returns how many were enqueued.

    Safe to re-run: the (notification, subscription) constraint stops a second
    row, and every still-pending delivery of the batch is enqueued again (a
    delivery is at least once; subscribers drop repeats by X-Hub-Delivery).
    Deliveries to a paused subscription are created but parked until its probe.
    """
    notification = Notification.objects.filter(pk=notification_id).only("id", "topic", "spread_at").first()
    if notification is None or notification.spread_at is not None:
        return 0
    keys = publish_keys(notification.topic)
    enqueued = 0
    batch: list[Delivery] = []
    now = timezone.now()
    for match in subscriptions_matching(keys, now=now):
        batch.append(
            Delivery(
                notification_id=notification_id,
                subscription_id=match.subscription_id,
                callback=match.callback,
                due_at=match.parked_until or now,
            )
        )
        if len(batch) >= SPREAD_BATCH:
            enqueued += _deliveries_create_and_enqueue(notification_id, batch)
            batch = []
    if batch:
        enqueued += _deliveries_create_and_enqueue(notification_id, batch)
    Notification.objects.filter(pk=notification_id, spread_at__isnull=True).update(spread_at=timezone.now())
    logger.info("notification %s spread: %s deliveries enqueued", notification_id, enqueued)
    return enqueued


def _deliveries_create_and_enqueue(notification_id: int, batch: list[Delivery]) -> int:
    now = timezone.now()
    with transaction.atomic():
        Delivery.objects.bulk_create(batch, ignore_conflicts=True)
        ids = list(
            Delivery.objects.filter(
                notification_id=notification_id,
                subscription_id__in=[d.subscription_id for d in batch],
                status=Delivery.Status.PENDING,
                due_at__lte=now,
            ).values_list("id", flat=True)
        )
        transaction.on_commit(lambda: deliveries_enqueue(ids))
    parked = {d.subscription_id for d in batch if d.due_at > now}
    if parked:
        # Written after the subscriptions were read as paused: one that resumed
        # since released its parked deliveries without these (see _delivery_park).
        still_paused = Subscription.objects.filter(pk__in=parked, state=Subscription.State.PAUSED)
        resumed = parked - set(still_paused.values_list("pk", flat=True))
        if resumed:
            _deliveries_release(Q(notification_id=notification_id, subscription_id__in=resumed))
    return len(ids)


def deliveries_enqueue(
    ids: list[int], *, retries: dict[int, int] | None = None, countdowns: dict[int, float] | None = None
) -> None:
    """Send one deliver task per id through a single producer connection.

    `retries` gives a delivery's attempts so far, so that a re-sent delivery
    keeps its place in the backoff schedule and goes to the retry queue;
    `countdowns` delays a delivery that is not due yet (seconds).
    """
    retries = retries or {}
    countdowns = countdowns or {}
    # kombu's publish batch sends the messages to Redis in pipelines (1.8x faster
    # than one round trip each); other transports publish one by one.
    with celery_app.producer_or_acquire() as producer, producer.batch(max_size=SPREAD_BATCH):
        for delivery_id in ids:
            done = retries.get(delivery_id, 0)
            celery_app.send_task(
                TaskName.DELIVER,
                kwargs={"delivery_id": delivery_id},
                producer=producer,
                retries=done,
                queue=QueueName.DELIVER_RETRY if done else QueueName.DELIVER,
                countdown=countdowns.get(delivery_id),
            )


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
    cutoff = now - timedelta(seconds=settings.HUB_SWEEP_GRACE_SECONDS)
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
        Delivery.objects.filter(pk__in=list(delivery_retries), status=Delivery.Status.PENDING).update(due_at=now)
        deliveries_enqueue(list(delivery_retries), retries=delivery_retries)
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
    long = max(queue_depth(QueueName.DELIVER), queue_depth(QueueName.DELIVER_RETRY)) > settings.HUB_SWEEP_MAX_QUEUE
    with _broker_redis() as client:
        if client is None:
            return not long
        if long:
            client.set(BROKER_BACKLOG_KEY, "1", ex=max(1, settings.HUB_SWEEP_GRACE_SECONDS))
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
    horizon = now + timedelta(seconds=settings.HUB_SWEEP_GRACE_SECONDS)
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
        Delivery.objects.filter(status=Delivery.Status.PENDING, due_at__lte=horizon)
        .order_by("due_at")
        .values_list("id", "attempts", "due_at")
        .iterator(chunk_size=SPREAD_BATCH)
    )
    batch: list[tuple[int, int, datetime]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= SPREAD_BATCH:
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
        deliveries_enqueue(
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


def topic_fetch_and_publish(*, topic: str) -> Notification:
    """Fetch a topic URL (redirects followed, size capped) and publish its body and Content-Type verbatim.

    Raises DeliveryFailed on a transport error or a non-2xx answer (retried),
    HubError when the content is too large (not retried).
    """
    limit = settings.HUB_MAX_CONTENT_BYTES
    try:
        # The body of a failed fetch is not needed; one larger than the limit is refused.
        reply = http.request(
            "GET", topic, allow_redirects=True, body_limit=lambda status: limit if 200 <= status < 300 else 0
        )
    except requests.RequestException as exc:
        raise DeliveryFailed(f"fetching {topic}: {http.describe_error(exc)}") from None
    if not 200 <= reply.status_code < 300:
        raise DeliveryFailed(f"fetching {topic}: HTTP {reply.status_code}")
    if reply.truncated:
        raise HubError(f"topic content is larger than HUB_MAX_CONTENT_BYTES ({limit} bytes)", 413)
    content_type = reply.headers.get("Content-Type", "application/octet-stream")
    return notification_publish(topic=topic, content=reply.body, content_type=content_type)


# --- Delivering ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Reschedule:
    """The deliver task must run again in `countdown` seconds.

    `retry` is true when an attempt was made (the subscriber asked to wait with
    Retry-After, or the subscription paused) and false when the rate limit or
    the cap on requests in flight deferred it before any attempt; `reserved`
    says whether the run after the wait already holds its rate-limit slot.
    """

    countdown: float
    retry: bool
    reserved: bool = False


def delivery_attempt(*, delivery_id: int, reserved: bool = False) -> Reschedule | None:
    """Try one pending delivery: rate limit, circuit breaker, POST, and record the outcome.

    Returns None when the delivery is settled or parked, a Reschedule when the
    task must run again at a set time, and raises DeliveryFailed when the attempt
    failed and retries remain (Celery's autoretry applies the backoff). A
    delivery that is no longer pending (an earlier run settled it) is left alone,
    which makes a repeated message harmless. `reserved` means the rate limit
    already granted this run its slot.
    """
    # One query for the row and its subscription; the content comes from the per-process cache.
    row = Delivery.objects.select_related("subscription").filter(pk=delivery_id).first()
    if row is None or row.status != Delivery.Status.PENDING:
        return None
    subscription = row.subscription
    now = timezone.now()
    if subscription is None or subscription.expires_at <= now:
        reason = "subscription ended before delivery" if subscription is None else "subscription lease expired"
        _delivery_update(delivery_id, status=Delivery.Status.CANCELLED, last_error=reason)
        logger.info("delivery %s cancelled: %s", delivery_id, reason)
        metrics.delivery_outcome("cancelled")
        return None

    probing = False
    if subscription.state == Subscription.State.PAUSED:
        probing = _probe_claim(subscription, now)
        if not probing:
            # Another run holds the probe, or the cool-down is on: wait for its end
            # (read afresh, since a probe moves it); a resume releases this delivery.
            fresh = Subscription.objects.filter(pk=subscription.pk).values_list("resume_after", flat=True).first()
            # Paused by an operator (no probe time): look again in a while; a resume releases it sooner.
            parked_until = max(
                fresh or now + timedelta(seconds=OPERATOR_PAUSE_RECHECK_SECONDS), now + timedelta(seconds=1)
            )
            # Parked while paused and no probe is due: a probe's success or a resume releases it.
            paused = Q(state=Subscription.State.PAUSED) & (
                Q(resume_after__isnull=True) | Q(resume_after__gt=timezone.now())
            )
            if not _delivery_park(delivery_id, subscription_id=subscription.pk, until=parked_until, holds=paused):
                logger.info("delivery %s sent: subscription %s resumed as it parked", delivery_id, subscription.pk)
                return Reschedule(countdown=0, retry=False, reserved=reserved)
            logger.info("delivery %s parked: subscription %s is paused", delivery_id, subscription.pk)
            metrics.delivery_outcome("parked")
            return None

    # At most HUB_CALLBACK_MAX_IN_FLIGHT requests to one callback at once, so a
    # hanging subscriber holds a few worker threads, not the pool.
    # A callback whose last attempts failed (often: hung until the timeout) gets
    # one request at a time until it answers again.
    lease = http.total_timeout() + IN_FLIGHT_LEASE_MARGIN
    cap = settings.HUB_CALLBACK_MAX_IN_FLIGHT
    if cap > 0 and subscription.consecutive_failures:
        cap = 1
    place, wait = ratelimit.in_flight_acquire(row.callback, cap, lease)
    if place is None:
        if probing:
            _probe_release(subscription)
        if subscription.consecutive_failures:
            # The callback is failing and busy (likely hanging until the timeout):
            # park instead of asking again and again. Its next success (or a
            # resume, or the sweeper) sends what waits.
            failing = Q(consecutive_failures__gt=0)
            until = now + timedelta(seconds=lease)
            if not _delivery_park(delivery_id, subscription_id=subscription.pk, until=until, holds=failing):
                logger.info("delivery %s sent again: callback answered as it parked", delivery_id)
                return Reschedule(countdown=0, retry=False, reserved=reserved)
            logger.info("delivery %s parked: failing callback has a request in flight", delivery_id)
            metrics.delivery_outcome("parked")
            return None
        wait = min(wait, IN_FLIGHT_RECHECK_SECONDS) * random.uniform(0.5, 1.0)  # noqa: S311 - jitter
        logger.info("delivery %s deferred %.2fs: callback has requests in flight", delivery_id, wait)
        metrics.delivery_outcome("rate_limited")
        return Reschedule(countdown=wait, retry=False, reserved=reserved)
    try:
        return _delivery_send(row, subscription, reserved=reserved, probing=probing, now=now)
    finally:
        ratelimit.in_flight_release(row.callback, place)


def _delivery_send(
    row: Delivery, subscription: Subscription, *, reserved: bool, probing: bool, now: datetime
) -> Reschedule | None:
    """Rate limit, POST and record one attempt (the caller holds a place among the requests in flight)."""
    delivery_id = row.pk
    if not reserved:
        rate = subscription_rate(subscription)
        wait = ratelimit.reserve(row.callback, rate) if rate else 0.0
        if wait > ratelimit.SLOT_TOLERANCE:
            _delivery_update(delivery_id, due_at=now + timedelta(seconds=wait))
            if probing:
                _probe_release(subscription)
            logger.info("delivery %s deferred %.2fs by the rate limit %s", delivery_id, wait, rate)
            metrics.delivery_outcome("rate_limited")
            return Reschedule(countdown=wait, retry=False, reserved=True)

    payload = notification_payload(row.notification_id)
    if payload is None:  # the notification was deleted with its deliveries
        return None
    body = payload.content
    attempt = row.attempts + 1
    started = timezone.now()
    clock = time.monotonic()
    try:
        request_headers = delivery.headers(
            content_type=payload.content_type,
            hub_url=settings.HUB_URL,
            topic=payload.topic,
            delivery_id=str(row.uuid),
            body=body,
            secret=subscription.secret,
            algorithm=settings.HUB_SIGNATURE_ALGORITHM,
            standard_webhooks=subscription.standard_webhooks,
        )
        # The thread's database connection goes back to the pool while the callback
        # answers (up to the HTTP timeouts): threads outnumber pooled connections.
        connection_release()
        result = delivery.post(row.callback, body, request_headers)
    except Exception as exc:
        # Whatever broke, the attempt is recorded and retried with backoff.
        logger.exception("delivery %s of notification %s: attempt %s broke", delivery_id, row.notification_id, attempt)
        result = delivery.Result(delivery.Outcome.RETRY, None, f"internal error: {type(exc).__name__}")
    try:
        return _attempt_record(
            row, subscription, result, probing=probing, attempt=attempt, started=started, clock=clock
        )
    except (DeliveryFailed, OperationalError, InterfaceError):
        raise
    except Exception as exc:
        # Recording what the subscriber answered failed (an answer the database
        # refused, say): record a bare failed attempt instead, so that retries,
        # backoff and the pause still apply rather than the sweeper re-sending
        # the same delivery for ever.
        logger.exception(
            "delivery %s of notification %s: recording attempt %s failed", delivery_id, row.notification_id, attempt
        )
        bare = delivery.Result(delivery.Outcome.RETRY, result.status_code, f"internal error: {type(exc).__name__}")
        return _attempt_record(row, subscription, bare, probing=probing, attempt=attempt, started=started, clock=clock)


def _attempt_record(
    row: Delivery,
    subscription: Subscription,
    result: delivery.Result,
    *,
    probing: bool,
    attempt: int,
    started: datetime,
    clock: float,
) -> Reschedule | None:
    """Record one attempt's outcome: the attempt row, the delivery's status or next try, the subscription's health."""
    delivery_id = row.pk
    metrics.delivery_attempted(time.monotonic() - clock)
    duration_ms = int((time.monotonic() - clock) * 1000)
    done = timezone.now()
    common = {"attempts": F("attempts") + 1, "last_status_code": result.status_code, "last_attempt_at": done}
    log_args = (delivery_id, row.notification_id, subscription.pk, attempt, result.status_code, duration_ms)
    DeliveryAttempt.objects.create(
        delivery_id=delivery_id,
        number=attempt,
        started_at=started,
        duration_ms=duration_ms,
        status_code=result.status_code,
        error="" if result.outcome is delivery.Outcome.DELIVERED else result.error.split(":", 1)[0][:200],
        response_body=result.body[:1000],
    )

    if result.outcome is delivery.Outcome.DELIVERED:
        _delivery_update(delivery_id, status=Delivery.Status.DELIVERED, delivered_at=done, last_error="", **common)
        logger.info("delivery %s of notification %s to subscription %s: attempt %s delivered (%s, %sms)", *log_args)
        metrics.delivery_delivered(notification_id=row.notification_id, delivered_at=done)
        if probing or subscription.consecutive_failures:
            _subscription_succeeded(subscription, resumed=probing)
        return None

    if result.outcome is delivery.Outcome.GONE:
        _delivery_update(
            delivery_id, status=Delivery.Status.CANCELLED, last_error="410 Gone: subscription ended", **common
        )
        Subscription.objects.filter(pk=subscription.pk).delete()
        logger.info("delivery %s of notification %s to subscription %s: attempt %s gone (%s, %sms)", *log_args)
        metrics.delivery_outcome("gone")
        return None

    paused_until = _subscription_failed(subscription, result.error, probing=probing, now=done)
    if row.attempts >= settings.HUB_DELIVERY_MAX_RETRIES:
        _delivery_update(delivery_id, status=Delivery.Status.FAILED, last_error=result.error[:500], **common)
        logger.warning(
            "delivery %s of notification %s to subscription %s: attempt %s failed for good (%s, %sms)", *log_args
        )
        metrics.delivery_outcome("failed")
        return None
    if paused_until is not None:
        # The subscription is paused: this delivery's next attempt is the probe
        # at the end of the cool-down.
        wait = (paused_until - done).total_seconds()
        _delivery_update(delivery_id, last_error=result.error[:500], due_at=paused_until, **common)
        logger.info(
            "delivery %s of notification %s to subscription %s: attempt %s failed (%s, %sms), probe in %.0fs",
            *log_args,
            wait,
        )
        metrics.delivery_outcome("retried")
        return Reschedule(countdown=wait, retry=True)
    if result.retry_after is not None:
        wait = max(retry_delay_max(row.attempts), min(result.retry_after, settings.HUB_RETRY_AFTER_MAX))
        _delivery_update(delivery_id, last_error=result.error[:500], due_at=done + timedelta(seconds=wait), **common)
        logger.info(
            "delivery %s of notification %s to subscription %s: attempt %s failed (%s, %sms), Retry-After: %.0fs",
            *log_args,
            wait,
        )
        metrics.delivery_outcome("retried")
        return Reschedule(countdown=wait, retry=True)
    due = done + timedelta(seconds=retry_delay_max(row.attempts))
    _delivery_update(delivery_id, last_error=result.error[:500], due_at=due, **common)
    logger.info("delivery %s of notification %s to subscription %s: attempt %s failed (%s, %sms), retrying", *log_args)
    metrics.delivery_outcome("retried")
    raise DeliveryFailed(result.error)


def retry_delay_max(retries: int) -> float:
    """The longest wait before retry number retries+1: Celery's backoff ceiling, before jitter."""
    return float(min(settings.HUB_RETRY_BACKOFF_MAX, settings.HUB_RETRY_BACKOFF_BASE * 2**retries))


def subscription_rate(subscription: Subscription) -> ratelimit.Rate | None:
    """The subscription's own rate limit, else HUB_CALLBACK_RATE_LIMIT."""
    text = subscription.rate_limit or settings.HUB_CALLBACK_RATE_LIMIT
    try:
        return ratelimit.parse_rate(text)
    except ratelimit.InvalidRate:
        logger.warning("subscription %s has an unreadable rate limit; using the default", subscription.pk)
        return ratelimit.parse_rate(settings.HUB_CALLBACK_RATE_LIMIT)


def _probe_claim(subscription: Subscription, now: datetime) -> bool:
    """Whether this run is the one probe of a paused subscription whose cool-down is over.

    A subscription paused by an operator has no `resume_after`: it is never
    probed, and waits for a resume.
    """
    if subscription.resume_after is None or subscription.resume_after > now:
        return False
    claimed = Subscription.objects.filter(
        pk=subscription.pk, state=Subscription.State.PAUSED, resume_after__lte=now
    ).update(resume_after=now + timedelta(seconds=PROBE_WINDOW_SECONDS))
    return claimed == 1


def _probe_release(subscription: Subscription) -> None:
    """Give the probe back (this run did not attempt), so the next delivery may probe."""
    Subscription.objects.filter(pk=subscription.pk, state=Subscription.State.PAUSED).update(resume_after=timezone.now())


def _subscription_succeeded(subscription: Subscription, *, resumed: bool) -> None:
    """The callback answered after failures: reset the count and send what waited for it."""
    Subscription.objects.filter(pk=subscription.pk).update(
        consecutive_failures=0, state=Subscription.State.ACTIVE, resume_after=None, updated_at=timezone.now()
    )
    if resumed:
        logger.info("subscription %s resumed: the probe was delivered", subscription.pk)
    subscription_release_parked(subscription_id=subscription.pk)


def _subscription_failed(subscription: Subscription, error: str, *, probing: bool, now: datetime) -> datetime | None:
    """Count a failed attempt; pause the subscription at the threshold, or keep it paused after a failed probe.

    Returns the end of the cool-down when this failure paused the subscription
    (or kept it paused), else None.
    """
    cooldown = now + timedelta(seconds=settings.HUB_CALLBACK_PAUSE_COOLDOWN)
    Subscription.objects.filter(pk=subscription.pk).update(
        consecutive_failures=F("consecutive_failures") + 1,
        last_failure_at=now,
        last_failure_reason=error[:500],
        updated_at=now,
    )
    if probing:
        Subscription.objects.filter(pk=subscription.pk).update(resume_after=cooldown)
        logger.info("subscription %s stays paused: the probe failed (%s)", subscription.pk, error[:100])
        return cooldown
    threshold = settings.HUB_CALLBACK_FAILURE_PAUSE
    if threshold <= 0:
        return None
    paused = Subscription.objects.filter(
        pk=subscription.pk, state=Subscription.State.ACTIVE, consecutive_failures__gte=threshold
    ).update(
        state=Subscription.State.PAUSED,
        paused_at=now,
        resume_after=cooldown,
        pause_reason=f"{threshold} consecutive failed delivery attempts; last: {error[:300]}",
    )
    if paused:
        logger.warning("subscription %s paused after %s consecutive failed attempts", subscription.pk, threshold)
        return cooldown
    return None


def subscription_update(
    *, subscription: Subscription, rate_limit: str | None = None, standard_webhooks: bool | None = None
) -> None:
    """Set what operators may change: the subscription's own rate limit ("" for the default) and
    whether deliveries carry Standard Webhooks headers. Raises HubError on an unreadable rate."""
    fields: dict[str, object] = {}
    if rate_limit is not None:
        rate_limit = rate_limit.strip()
        if rate_limit:
            try:
                ratelimit.parse_rate(rate_limit)
            except ratelimit.InvalidRate as exc:
                raise HubError(str(exc)) from None
        fields["rate_limit"] = rate_limit
    if standard_webhooks is not None:
        fields["standard_webhooks"] = standard_webhooks
    if fields:
        Subscription.objects.filter(pk=subscription.pk).update(updated_at=timezone.now(), **fields)
        for name, value in fields.items():
            setattr(subscription, name, value)


def subscription_pause(*, subscription: Subscription, reason: str = "paused by an operator") -> None:
    """Hold every delivery of the subscription until an operator resumes it (no probe; nothing is dropped)."""
    now = timezone.now()
    Subscription.objects.filter(pk=subscription.pk).update(
        state=Subscription.State.PAUSED, paused_at=now, pause_reason=reason[:500], resume_after=None, updated_at=now
    )


def subscriptions_expire_now(*, subscriptions: QuerySet[Subscription]) -> int:
    """End the leases at once: they receive nothing more, and the next expiry run removes them; returns how many."""
    now = timezone.now()
    return Subscription.objects.filter(pk__in=subscriptions.values("pk")).update(expires_at=now, updated_at=now)


def subscription_resume(*, subscription: Subscription) -> int:
    """Resume a paused subscription at once and send its parked deliveries; returns how many."""
    Subscription.objects.filter(pk=subscription.pk).update(
        state=Subscription.State.ACTIVE, consecutive_failures=0, resume_after=None, updated_at=timezone.now()
    )
    return subscription_release_parked(subscription_id=subscription.pk)


def subscription_release_parked(*, subscription_id: int) -> int:
    """Send every pending delivery of the subscription that waits for a later time (parked while paused).

    Callers change the subscription's state first and call this after, which is
    what `_delivery_park` relies on. Rows are taken under a row lock and moved to
    now, so a delivery that releases itself at the same time (its compare-and-set
    on `due_at`) is sent once, by one of the two.
    """
    return _deliveries_release(Q(subscription_id=subscription_id))


def _deliveries_release(which: Q) -> int:
    """Move the pending deliveries matching `which` that wait for a later time to now and enqueue them."""
    released = 0
    while True:
        now = timezone.now()
        with transaction.atomic():
            rows = dict(
                Delivery.objects.select_for_update()
                .filter(which, status=Delivery.Status.PENDING, due_at__gt=now)
                .order_by("id")
                .values_list("id", "attempts")[:SPREAD_BATCH]
            )
            if not rows:
                return released
            Delivery.objects.filter(pk__in=list(rows)).update(due_at=now, updated_at=now)
            transaction.on_commit(lambda rows=rows: deliveries_enqueue(list(rows), retries=rows))
        released += len(rows)


def deliveries_replay(deliveries: QuerySet[Delivery], *, progress: Callable[[int, int], None] | None = None) -> int:
    """Send failed deliveries again with a fresh retry budget (the dead-letter replay); returns how many.

    `progress(done, total)` is called after each batch of SPREAD_BATCH.
    """
    now = timezone.now()
    ids = list(deliveries.filter(status=Delivery.Status.FAILED).values_list("id", flat=True))
    for start in range(0, len(ids), SPREAD_BATCH):
        chunk = ids[start : start + SPREAD_BATCH]
        with transaction.atomic():
            updated = list(
                Delivery.objects.filter(pk__in=chunk, status=Delivery.Status.FAILED).values_list("id", flat=True)
            )
            Delivery.objects.filter(pk__in=updated).update(
                status=Delivery.Status.PENDING, attempts=0, due_at=now, updated_at=now
            )
            transaction.on_commit(lambda updated=updated: deliveries_enqueue(updated))
        if progress is not None:
            progress(min(start + SPREAD_BATCH, len(ids)), len(ids))
    if ids:
        logger.info("replaying %s failed deliveries", len(ids))
    return len(ids)


def _delivery_park(delivery_id: int, *, subscription_id: int, until: datetime, holds: Q) -> bool:
    """Park a pending delivery until `until` while its subscription matches `holds`; False: send it now.

    Whatever ends the state that parks (a probe's success, an answer, a resume)
    changes the subscription first and then releases the parked deliveries. A
    delivery that read the old state and parked after that release would wait for
    its due time. So the park is written first and the subscription read after:
    either the release sees the park, or this read sees the new state, and then
    the delivery takes itself back (compare-and-set on `due_at`, so it is not
    sent twice when the release took it too) and the caller sends it now.
    """
    _delivery_update(delivery_id, due_at=until)
    if Subscription.objects.filter(holds, pk=subscription_id).exists():
        return True
    taken = Delivery.objects.filter(pk=delivery_id, status=Delivery.Status.PENDING, due_at=until).update(
        due_at=timezone.now(), updated_at=timezone.now()
    )
    # Not taken: the release already sent it, or it is settled; either way nothing is parked.
    return not taken


def _delivery_update(delivery_id: int, **fields: Any) -> None:
    # Only a pending delivery changes: a status never moves backwards.
    Delivery.objects.filter(pk=delivery_id, status=Delivery.Status.PENDING).update(updated_at=timezone.now(), **fields)


def _host(url: str) -> str:
    """The host a request for url really goes to (the outbound guard's reading), for logs: never the path or query."""
    try:
        return netguard.url_target(url).host or "?"
    except netguard.ForbiddenDestination:
        return "?"
