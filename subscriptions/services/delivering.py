"""Delivering: one attempt of one delivery (in-flight cap, rate limit, POST) and its recorded outcome."""

import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.db.models import F, Q
from django.utils import timezone

from subscriptions import delivery, http, metrics, ratelimit
from subscriptions.errors import DeliveryFailed
from subscriptions.metrics import DeliveryOutcome
from subscriptions.models import Delivery, DeliveryAttempt, Subscription
from subscriptions.selectors import notification_payload
from subscriptions.services import breaker
from websubhub.db import connection_release

# Every service module logs as "subscriptions.services", the one logger they shared
# before the package was split: log configuration and readers select that name.
logger = logging.getLogger("subscriptions.services")

# A place among a callback's requests in flight is held at most the HTTP
# total timeout plus this (seconds), and a delivery that found no place looks again
# within this many seconds.
IN_FLIGHT_LEASE_MARGIN = 5.0
IN_FLIGHT_RECHECK_SECONDS = 1.0
# How often deliveries parked behind an operator's pause look again (seconds);
# a resume sends them at once.
OPERATOR_PAUSE_RECHECK_SECONDS = 3600


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
    claim = ratelimit.delivery_claim(delivery_id, http.total_timeout() + IN_FLIGHT_LEASE_MARGIN)
    if claim is None:
        # Another run of this delivery (a re-sent message) is at work right now: it settles it.
        logger.info("delivery %s skipped: another run of it is in progress", delivery_id)
        return None
    try:
        return _delivery_attempt_claimed(delivery_id=delivery_id, reserved=reserved)
    finally:
        ratelimit.delivery_unclaim(delivery_id, claim)


def _delivery_attempt_claimed(*, delivery_id: int, reserved: bool) -> Reschedule | None:
    # One query for the row and its subscription; the content comes from the per-process cache.
    row = Delivery.objects.select_related("subscription").filter(pk=delivery_id).first()
    if row is None or row.status != Delivery.Status.PENDING:
        return None
    subscription = row.subscription
    now = timezone.now()
    if subscription is None or subscription.expires_at <= now:
        reason = "subscription ended before delivery" if subscription is None else "subscription lease expired"
        breaker.delivery_update(delivery_id, status=Delivery.Status.CANCELLED, last_error=reason)
        logger.info("delivery %s cancelled: %s", delivery_id, reason)
        metrics.delivery_outcome(DeliveryOutcome.CANCELLED)
        return None

    probing = False
    if subscription.state == Subscription.State.PAUSED:
        probing = breaker.probe_claim(subscription, now)
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
            if not breaker.delivery_park(
                delivery_id, subscription_id=subscription.pk, until=parked_until, holds=paused
            ):
                logger.info("delivery %s sent: subscription %s resumed as it parked", delivery_id, subscription.pk)
                return Reschedule(countdown=0, retry=False, reserved=reserved)
            logger.info("delivery %s parked: subscription %s is paused", delivery_id, subscription.pk)
            metrics.delivery_outcome(DeliveryOutcome.PARKED)
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
            breaker.probe_release(subscription)
        if subscription.consecutive_failures:
            # The callback is failing and busy (likely hanging until the timeout):
            # park instead of asking again and again. Its next success (or a
            # resume, or the sweeper) sends what waits.
            failing = Q(consecutive_failures__gt=0)
            until = now + timedelta(seconds=lease)
            if not breaker.delivery_park(delivery_id, subscription_id=subscription.pk, until=until, holds=failing):
                logger.info("delivery %s sent again: callback answered as it parked", delivery_id)
                return Reschedule(countdown=0, retry=False, reserved=reserved)
            logger.info("delivery %s parked: failing callback has a request in flight", delivery_id)
            metrics.delivery_outcome(DeliveryOutcome.PARKED)
            return None
        wait = min(wait, IN_FLIGHT_RECHECK_SECONDS) * random.uniform(0.5, 1.0)  # noqa: S311 - jitter
        logger.info("delivery %s deferred %.2fs: callback has requests in flight", delivery_id, wait)
        metrics.delivery_outcome(DeliveryOutcome.RATE_LIMITED)
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
            breaker.delivery_update(delivery_id, due_at=now + timedelta(seconds=wait))
            if probing:
                breaker.probe_release(subscription)
            logger.info("delivery %s deferred %.2fs by the rate limit %s", delivery_id, wait, rate)
            metrics.delivery_outcome(DeliveryOutcome.RATE_LIMITED)
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
        breaker.delivery_update(
            delivery_id, status=Delivery.Status.DELIVERED, delivered_at=done, last_error="", **common
        )
        logger.info("delivery %s of notification %s to subscription %s: attempt %s delivered (%s, %sms)", *log_args)
        metrics.delivery_delivered(notification_id=row.notification_id, delivered_at=done)
        if probing or subscription.consecutive_failures:
            breaker.subscription_succeeded(subscription, resumed=probing)
        return None

    if result.outcome is delivery.Outcome.GONE:
        breaker.delivery_update(
            delivery_id, status=Delivery.Status.CANCELLED, last_error="410 Gone: subscription ended", **common
        )
        Subscription.objects.filter(pk=subscription.pk).delete()
        logger.info("delivery %s of notification %s to subscription %s: attempt %s gone (%s, %sms)", *log_args)
        metrics.delivery_outcome(DeliveryOutcome.GONE)
        return None

    paused_until = breaker.subscription_failed(subscription, result.error, probing=probing, now=done)
    if row.attempts >= settings.HUB_DELIVERY_MAX_RETRIES:
        breaker.delivery_update(delivery_id, status=Delivery.Status.FAILED, last_error=result.error[:500], **common)
        logger.warning(
            "delivery %s of notification %s to subscription %s: attempt %s failed for good (%s, %sms)", *log_args
        )
        metrics.delivery_outcome(DeliveryOutcome.FAILED)
        return None
    if paused_until is not None:
        # The subscription is paused: this delivery's next attempt is the probe
        # at the end of the cool-down.
        wait = (paused_until - done).total_seconds()
        breaker.delivery_update(delivery_id, last_error=result.error[:500], due_at=paused_until, **common)
        logger.info(
            "delivery %s of notification %s to subscription %s: attempt %s failed (%s, %sms), probe in %.0fs",
            *log_args,
            wait,
        )
        metrics.delivery_outcome(DeliveryOutcome.RETRIED)
        return Reschedule(countdown=wait, retry=True)
    if result.retry_after is not None:
        wait = max(retry_delay_max(row.attempts), min(result.retry_after, settings.HUB_RETRY_AFTER_MAX))
        breaker.delivery_update(
            delivery_id, last_error=result.error[:500], due_at=done + timedelta(seconds=wait), **common
        )
        logger.info(
            "delivery %s of notification %s to subscription %s: attempt %s failed (%s, %sms), Retry-After: %.0fs",
            *log_args,
            wait,
        )
        metrics.delivery_outcome(DeliveryOutcome.RETRIED)
        return Reschedule(countdown=wait, retry=True)
    due = done + timedelta(seconds=retry_delay_max(row.attempts))
    breaker.delivery_update(delivery_id, last_error=result.error[:500], due_at=due, **common)
    logger.info("delivery %s of notification %s to subscription %s: attempt %s failed (%s, %sms), retrying", *log_args)
    metrics.delivery_outcome(DeliveryOutcome.RETRIED)
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
