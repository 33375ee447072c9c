"""Delivering: one attempt of one delivery (claim, in-flight cap, rate limit, POST) and its recorded outcome.

This module owns the retry schedule: the database counts a delivery's attempts,
`retry_delay` says how long the next wait is, and `delivery_attempt` returns
what the deliver task must do next (nothing, or send the delivery again after a
countdown). A wait longer than HUB_BROKER_MAX_COUNTDOWN is not a broker message:
the delivery waits in the database (`queued` false, `due_at`) and
`deliveries_enqueue_due` sends it when it comes due.

Why one module of about 430 lines: it is one delivery run, read top to bottom in
the order it happens (cancel or park, breaker, in-flight cap and rate limit, POST,
the outcome and the next wait, the outcome's one raw statement), and it is the
worker's hot path (bench/RESULTS.md): its parts share DeliveryWork, the Breaker
and Resend, and a reader checking "what happens after a 503" follows one file.
"""

import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import InterfaceError, OperationalError, connections, transaction
from django.db.models import Q
from django.utils import timezone

from subscriptions import delivery, http, metrics, ratelimit
from subscriptions.metrics import DeliveryOutcome
from subscriptions.models import Delivery, DeliveryAttempt, Subscription
from subscriptions.selectors import DeliveryWork, delivery_work, notification_payload
from subscriptions.services import breaker, events, outcome_writer, queueing
from subscriptions.services.breaker import Breaker
from websubhub.db import connection_release
from websubhub.hub_settings import hub_settings

# Every service module logs as "subscriptions.services", the one logger they shared
# before the package was split: log configuration and readers select that name.
logger = logging.getLogger("subscriptions.services")

# A claim and a place among a callback's requests in flight are held at most the
# HTTP total timeout plus this (seconds). A delivery that found no place looks
# again within this many seconds, or within as long as the callback's oldest
# request has been open when that is longer (never after that request's lease
# ends): a callback that hangs until the timeout is asked about a few times per
# waiting delivery, not every second until the first timeout (HUB_HTTP_READ_TIMEOUT,
# 10 s by default) shows it failing.
IN_FLIGHT_LEASE_MARGIN = 5.0
IN_FLIGHT_RECHECK_SECONDS = 1.0
# How often deliveries parked behind an operator's pause look again (seconds);
# a resume sends them at once.
OPERATOR_PAUSE_RECHECK_SECONDS = 3600
# Deliveries that came due sent by one hub.enqueue_due batch.
ENQUEUE_DUE_BATCH = 1000


@dataclass(frozen=True)
class Resend:
    """The deliver task sends the delivery again after `countdown` seconds.

    `attempted`: the delivery has attempts, so the message goes to the retry
    queue. `reserved`: the run after the wait already holds its rate-limit slot.
    """

    countdown: float
    attempted: bool
    reserved: bool = False


def retry_delay(attempts: int) -> float:
    """The wait before the next attempt of a delivery that failed `attempts` times: full jitter.

    A random time up to HUB_RETRY_BACKOFF_BASE * 2**(attempts-1) seconds, never
    more than HUB_RETRY_BACKOFF_MAX.
    """
    return random.uniform(0, retry_delay_max(attempts - 1))  # noqa: S311 - jitter, not a secret


def retry_delay_max(retries: int) -> float:
    """The longest wait before retry number retries+1, before jitter."""
    return float(min(hub_settings.HUB_RETRY_BACKOFF_MAX, hub_settings.HUB_RETRY_BACKOFF_BASE * 2**retries))


def delivery_attempt(*, delivery_id: int, reserved: bool = False) -> Resend | None:
    """Try one pending delivery: circuit breaker, claim, in-flight cap, rate limit, POST, and record the outcome.

    Returns a Resend when the task must send the delivery again after a short
    wait, else None: settled, parked, or waiting in the database for its due
    time. A delivery that is no longer pending (an earlier run settled it) is left
    alone, and so is one that another run holds right now: a repeated message is
    harmless. `reserved` means the rate limit already granted this run its slot.
    """
    work = delivery_work(delivery_id)
    if work is None or work.status != Delivery.Status.PENDING:
        return None
    now = timezone.now()
    if not work.queued and work.due_at > now:
        # It waits in the database (parked, or for a long retry): whatever sent this message came before,
        # and hub.enqueue_due or a release sends it when it is due. Every send marks the row queued first.
        logger.debug("delivery %s: a message for a delivery that waits in the database, dropped", delivery_id)
        return None
    if work.subscription_id is None or work.expires_at <= now:
        reason = "subscription ended before delivery" if work.subscription_id is None else "subscription lease expired"
        breaker.delivery_update(delivery_id, status=Delivery.Status.CANCELLED, last_error=reason)
        logger.info("delivery %s cancelled: %s", delivery_id, reason)
        metrics.delivery_outcome(DeliveryOutcome.CANCELLED)
        return None

    board = Breaker(
        subscription_id=work.subscription_id,
        paused=work.state == Subscription.State.PAUSED,
        consecutive_failures=work.consecutive_failures,
        resume_after=work.resume_after,
    )
    probing = False
    if board.paused:
        probing = board.probe_claim(now)
        if not probing:
            return _park_while_paused(work, now=now, reserved=reserved)

    # At most HUB_CALLBACK_MAX_IN_FLIGHT requests to one callback at once, so a
    # hanging subscriber holds a few worker threads, not the pool; a callback
    # whose last attempts failed (often: hung until the timeout) gets one.
    cap = hub_settings.HUB_CALLBACK_MAX_IN_FLIGHT
    if cap > 0 and board.failing:
        cap = 1
    lease = http.total_timeout() + IN_FLIGHT_LEASE_MARGIN
    admission = ratelimit.attempt_admit(
        work.uuid, work.callback, lease=lease, cap=cap, rate=None if reserved else subscription_rate(work)
    )
    if admission.verdict is not ratelimit.Verdict.ADMITTED:
        if probing:
            board.probe_release()
        return _not_admitted(work, board, admission, now=now, reserved=reserved)
    settled = False
    try:
        settled, resend = _delivery_send(work, board, probing=probing)
        return resend
    finally:
        ratelimit.attempt_give_back(work.uuid, work.callback, admission, settled=settled)


def _park_while_paused(work: DeliveryWork, *, now: datetime, reserved: bool) -> Resend | None:
    """Another run holds the probe, or the cool-down is on: wait for its end; a resume releases the delivery."""
    fresh = Subscription.objects.filter(pk=work.subscription_id).values_list("resume_after", flat=True).first()
    # Paused by an operator (no probe time): look again in a while; a resume releases it sooner.
    until = max(fresh or now + timedelta(seconds=OPERATOR_PAUSE_RECHECK_SECONDS), now + timedelta(seconds=1))
    # Parked while paused and no probe is due: a probe's success or a resume releases it.
    paused = Q(state=Subscription.State.PAUSED) & (Q(resume_after__isnull=True) | Q(resume_after__gt=timezone.now()))
    if not breaker.delivery_park(work.delivery_id, subscription_id=work.subscription_id, until=until, holds=paused):
        logger.info("delivery %s sent: subscription %s resumed as it parked", work.delivery_id, work.subscription_id)
        return Resend(countdown=0, attempted=work.attempts > 0, reserved=reserved)
    logger.info("delivery %s parked: subscription %s is paused", work.delivery_id, work.subscription_id)
    metrics.delivery_outcome(DeliveryOutcome.PARKED)
    return None


def _not_admitted(
    work: DeliveryWork, board: Breaker, admission: ratelimit.Admission, *, now: datetime, reserved: bool
) -> Resend | None:
    """What a run that could not POST now does: step aside, park, or come back when its place or slot is free."""
    delivery_id = work.delivery_id
    attempted = work.attempts > 0
    if admission.verdict is ratelimit.Verdict.BUSY:
        # Another run of this delivery (a re-sent message) is at work right now: it settles it.
        logger.info("delivery %s skipped: another run of it is in progress", delivery_id)
        return None
    if admission.verdict is ratelimit.Verdict.RATE_LIMITED:
        # Its slot is reserved: the run at that time sends without asking again.
        breaker.delivery_update(delivery_id, due_at=now + timedelta(seconds=admission.wait), queued=True)
        logger.info("delivery %s deferred %.2fs by the rate limit", delivery_id, admission.wait)
        metrics.delivery_outcome(DeliveryOutcome.RATE_LIMITED)
        return Resend(countdown=admission.wait, attempted=attempted, reserved=True)
    if board.failing:
        # The callback is failing and busy (likely hanging until the timeout):
        # park instead of asking again and again. Its next success (or a
        # resume, or hub.enqueue_due at the end of the lease) sends what waits.
        until = now + timedelta(seconds=http.total_timeout() + IN_FLIGHT_LEASE_MARGIN)
        failing = Q(consecutive_failures__gt=0)
        if not breaker.delivery_park(delivery_id, subscription_id=work.subscription_id, until=until, holds=failing):
            logger.info("delivery %s sent again: callback answered as it parked", delivery_id)
            return Resend(countdown=0, attempted=attempted, reserved=reserved)
        logger.info("delivery %s parked: failing callback has a request in flight", delivery_id)
        metrics.delivery_outcome(DeliveryOutcome.PARKED)
        return None
    wait = in_flight_recheck(admission) * random.uniform(0.5, 1.0)  # noqa: S311 - jitter
    logger.info("delivery %s deferred %.2fs: callback has requests in flight", delivery_id, wait)
    metrics.delivery_outcome(DeliveryOutcome.RATE_LIMITED)
    return Resend(countdown=wait, attempted=attempted, reserved=reserved)


def in_flight_recheck(admission: ratelimit.Admission) -> float:
    """Seconds before a delivery that found its callback's places in flight all taken looks again (before jitter).

    IN_FLIGHT_RECHECK_SECONDS, or as long as the oldest request in flight has been
    open when that is longer, so the waits double while the callback keeps a
    request open; never after the oldest request's place is due back, and never
    longer than a countdown the broker may hold (HUB_BROKER_MAX_COUNTDOWN), since
    the wait is one.
    """
    longest = max(IN_FLIGHT_RECHECK_SECONDS, hub_settings.HUB_BROKER_MAX_COUNTDOWN)
    return min(admission.wait, max(IN_FLIGHT_RECHECK_SECONDS, admission.open_for), longest)


def _delivery_send(work: DeliveryWork, board: Breaker, *, probing: bool) -> tuple[bool, Resend | None]:
    """POST one attempt and record it (the caller holds the claim); returns (settled, what next)."""
    payload = notification_payload(work.notification_id)
    if payload is None:  # the notification was deleted with its deliveries
        return True, None
    attempt = work.attempts + 1
    started = timezone.now()
    clock = time.monotonic()
    try:
        request_headers = delivery.headers(
            content_type=payload.content_type,
            hub_url=hub_settings.HUB_URL,
            topic=payload.topic,
            delivery_id=work.uuid,
            body=payload.content,
            secret=work.secret,
            algorithm=hub_settings.HUB_SIGNATURE_ALGORITHM,
            standard_webhooks=work.standard_webhooks,
            previous_secret=delivery.secret_in_grace(
                work.previous_secret, work.previous_secret_expires_at, now=started
            ),
        )
        # The thread's database connection goes back to the pool while the callback
        # answers (up to the HTTP timeouts): threads outnumber pooled connections.
        connection_release()
        result = delivery.post(work.callback, payload.content, request_headers)
    except Exception as exc:
        # Whatever broke, the attempt is recorded and retried with backoff.
        logger.exception(
            "delivery %s of notification %s: attempt %s broke", work.delivery_id, work.notification_id, attempt
        )
        result = delivery.Result(delivery.Outcome.RETRY, None, f"internal error: {type(exc).__name__}")
    seconds = time.monotonic() - clock
    metrics.delivery_attempted(seconds)
    attempt_row = {
        "number": attempt,
        "started_at": started,
        "duration_ms": int(seconds * 1000),
        "status_code": result.status_code,
        "error": "" if result.outcome is delivery.Outcome.DELIVERED else result.error.split(":", 1)[0][:200],
        "response_body": result.body[:1000],
    }
    # A failure counts once on the breaker, whatever happens to its record below.
    paused_until = None
    if result.outcome is delivery.Outcome.RETRY:
        paused_until = board.failed(result.error, probing=probing, now=timezone.now())
    try:
        return _attempt_record(
            work,
            board,
            result,
            attempt_row,
            probing=probing,
            paused_until=paused_until,
            published_at=payload.published_at,
        )
    except (OperationalError, InterfaceError):
        # The database is unreachable: the task retries the run (nothing was recorded).
        raise
    except Exception as exc:
        if not Delivery.objects.filter(pk=work.delivery_id).exists():
            # Erased or purged while its POST was in flight: nothing is left to record.
            logger.info("delivery %s was deleted during attempt %s; not recorded", work.delivery_id, attempt)
            return True, None
        # Recording what the subscriber answered failed (an answer the database
        # refused, say): record a bare failed attempt instead, so that retries,
        # backoff and the pause still apply rather than the sweeper re-sending
        # the same delivery for ever.
        logger.exception(
            "delivery %s of notification %s: recording attempt %s failed",
            work.delivery_id,
            work.notification_id,
            attempt,
        )
        bare = delivery.Result(delivery.Outcome.RETRY, result.status_code, f"internal error: {type(exc).__name__}")
        attempt_row.update(error=bare.error.split(":", 1)[0][:200], response_body="")
        return _attempt_record(
            work,
            board,
            bare,
            attempt_row,
            probing=probing,
            paused_until=paused_until,
            published_at=payload.published_at,
        )


def _attempt_record(
    work: DeliveryWork,
    board: Breaker,
    result: delivery.Result,
    attempt_row: dict[str, Any],
    *,
    probing: bool,
    paused_until: datetime | None,
    published_at: datetime,
) -> tuple[bool, Resend | None]:
    """Record one attempt: the attempt row and the delivery's new state in one statement, then the breaker.

    `paused_until`: the end of the cool-down when this failure paused the subscription (or kept it paused).
    """
    done = timezone.now()
    attempt = attempt_row["number"]
    log_args = (
        work.delivery_id,
        work.notification_id,
        work.subscription_id,
        attempt,
        result.status_code,
        attempt_row["duration_ms"],
    )
    outcome = {"last_status_code": result.status_code, "last_attempt_at": done}

    if result.outcome is delivery.Outcome.DELIVERED:
        fields = {"status": Delivery.Status.DELIVERED, "delivered_at": done, "last_error": "", **outcome}
        # In a worker, the writer thread records it with others in one transaction (outcome_writer).
        if not outcome_writer.writer.submit((work.delivery_id, attempt_row, {**fields, "updated_at": timezone.now()})):
            _outcome_write(work, attempt_row, **fields)
        logger.info("delivery %s of notification %s to subscription %s: attempt %s delivered (%s, %sms)", *log_args)
        metrics.delivery_delivered(published_at=published_at, delivered_at=done)
        if probing or board.failing:
            board.succeeded(resumed=probing)
        return True, None

    error = result.error[:500]
    if result.outcome is delivery.Outcome.GONE:
        _outcome_write(
            work, attempt_row, status=Delivery.Status.CANCELLED, last_error="410 Gone: subscription ended", **outcome
        )
        Subscription.objects.filter(pk=work.subscription_id).delete()
        logger.info("delivery %s of notification %s to subscription %s: attempt %s gone (%s, %sms)", *log_args)
        metrics.delivery_outcome(DeliveryOutcome.GONE)
        return True, None

    if work.attempts >= hub_settings.HUB_DELIVERY_MAX_RETRIES:
        with transaction.atomic():
            if _outcome_write(work, attempt_row, status=Delivery.Status.FAILED, last_error=error, **outcome):
                events.delivery_failed(delivery_id=work.delivery_id, now=done)
        logger.warning(
            "delivery %s of notification %s to subscription %s: attempt %s failed for good (%s, %sms)", *log_args
        )
        metrics.delivery_outcome(DeliveryOutcome.FAILED)
        return True, None
    if paused_until is not None:
        # The subscription is paused: this delivery's next attempt is the probe at the end of the cool-down.
        due, why = paused_until, "probe"
    elif result.retry_after is not None:
        # The subscriber asked for a pause: at least that, within HUB_RETRY_AFTER_MAX.
        wait = max(retry_delay_max(work.attempts), min(result.retry_after, hub_settings.HUB_RETRY_AFTER_MAX))
        due, why = done + timedelta(seconds=wait), "Retry-After"
    else:
        due, why = done + timedelta(seconds=retry_delay(attempt)), "retry"
    wait = max(0.0, (due - done).total_seconds())
    # A short wait is a broker countdown; a long one waits in the database (hub.enqueue_due sends it).
    in_broker = wait <= hub_settings.HUB_BROKER_MAX_COUNTDOWN
    _outcome_write(work, attempt_row, last_error=error, due_at=due, queued=in_broker, **outcome)
    logger.info(
        "delivery %s of notification %s to subscription %s: attempt %s failed (%s, %sms), %s in %.1fs",
        *log_args,
        why,
        wait,
    )
    metrics.delivery_outcome(DeliveryOutcome.RETRIED)
    return False, Resend(countdown=wait, attempted=True) if in_broker else None


def _outcome_write(work: DeliveryWork | int, attempt_row: dict[str, Any], **fields: Any) -> bool:
    """Add the attempt to the log and write the delivery's outcome (only while it is pending); True when written.

    One statement on PostgreSQL (the INSERT in a WITH clause of the UPDATE), one
    transaction of two elsewhere. On PostgreSQL it commits asynchronously
    (`synchronous_commit` off for this statement's transaction only): a crash of
    the database server may forget the outcomes of its last fraction of a
    second, which leaves those deliveries pending as they were before the
    attempt, so they are sent again (at least once; README, Delivery
    guarantees). Accepting a notification and creating its deliveries stay
    synchronous: nothing accepted is lost.
    """
    delivery_id = work if isinstance(work, int) else work.delivery_id
    fields["updated_at"] = timezone.now()
    connection = connections["default"]
    insert, update = _outcome_sql(connection, tuple(attempt_row), tuple(fields))
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"WITH attempt AS ({insert}) {update}"
                # This statement's own transaction commits without waiting for the WAL flush.
                " AND set_config('synchronous_commit', 'off', true) IS NOT NULL",
                [delivery_id, *attempt_row.values(), *fields.values(), delivery_id],
            )
            return cursor.rowcount == 1
    # Raw statements with each value prepared by its field, as the ORM would (the ORM's own
    # create and update cost more than the rest of a delivery on SQLite).
    attempt_values = [_db_value(DeliveryAttempt, name, value, connection) for name, value in attempt_row.items()]
    delivery_values = [_db_value(Delivery, name, value, connection) for name, value in fields.items()]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(insert, [delivery_id, *attempt_values])
        cursor.execute(update, [*delivery_values, delivery_id])
        return cursor.rowcount == 1


def outcome_batching_start() -> None:
    """From now on this process's delivered outcomes are recorded by its writer thread, and its give-backs of
    in-flight places and claims sent in batches (a worker's start)."""
    outcome_writer.writer.enable(outcomes_write)
    ratelimit.give_backs.enable()


def outcome_batching_stop() -> None:
    """Record and send what those threads hold; the tasks write and send their own again (a worker's end)."""
    outcome_writer.writer.stop()
    ratelimit.give_backs.stop()


def outcomes_write(batch: list[outcome_writer.Outcome]) -> None:
    """Record many outcomes (delivery id, attempt row, the delivery's fields) in one transaction.

    The outcome writer's batch: on PostgreSQL each outcome is _outcome_write's one
    statement, sent together (executemany) and committed once, asynchronously. Rows
    go in delivery id order, so two writers never wait on each other in a cycle. A
    batch the database refuses for one of its rows (an answer it cannot store, a
    delivery deleted meanwhile) is recorded again one outcome at a time, that one
    as a bare attempt; an unreachable database raises, and the writer tries again.
    """
    connection = connections["default"]
    groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[outcome_writer.Outcome]] = {}
    for outcome in sorted(batch, key=lambda o: o[0]):
        groups.setdefault((tuple(outcome[1]), tuple(outcome[2])), []).append(outcome)
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            for (attempt_fields, delivery_fields), outcomes in groups.items():
                insert, update = _outcome_sql(connection, attempt_fields, delivery_fields)
                if connection.vendor == "postgresql":
                    cursor.executemany(
                        f"WITH attempt AS ({insert}) {update}"
                        " AND set_config('synchronous_commit', 'off', true) IS NOT NULL",
                        [[d, *row.values(), *fields.values(), d] for d, row, fields in outcomes],
                    )
                    continue
                cursor.executemany(
                    insert,
                    [
                        [d, *(_db_value(DeliveryAttempt, k, v, connection) for k, v in row.items())]
                        for d, row, _ in outcomes
                    ],
                )
                cursor.executemany(
                    update,
                    [
                        [*(_db_value(Delivery, k, v, connection) for k, v in fields.items()), d]
                        for d, _, fields in outcomes
                    ],
                )
    except (OperationalError, InterfaceError):
        raise
    except Exception:
        logger.info("a batch of %s outcomes was refused; recording them one at a time", len(batch), exc_info=True)
        for outcome in batch:
            _outcome_write_alone(*outcome)


def _outcome_write_alone(delivery_id: int, attempt_row: dict[str, Any], fields: dict[str, Any]) -> None:
    """One outcome of a refused batch: as it is, else as a bare attempt (what the subscriber said is dropped)."""
    try:
        _outcome_write(delivery_id, attempt_row, **fields)
    except (OperationalError, InterfaceError):
        raise
    except Exception:
        if not Delivery.objects.filter(pk=delivery_id).exists():
            logger.info("delivery %s was deleted during its attempt; not recorded", delivery_id)
            return
        logger.exception("delivery %s: recording attempt %s failed", delivery_id, attempt_row.get("number"))
        bare = {**attempt_row, "error": "internal error", "response_body": ""}
        _outcome_write(delivery_id, bare, **fields)


def _db_value(model: type, name: str, value: Any, connection: Any) -> Any:
    return model._meta.get_field(name).get_db_prep_value(value, connection, prepared=False)


_outcome_sql_cache: dict[tuple[str, tuple[str, ...], tuple[str, ...]], tuple[str, str]] = {}


def _outcome_sql(connection: Any, attempt_fields: tuple[str, ...], delivery_fields: tuple[str, ...]) -> tuple[str, str]:
    """The attempt's INSERT and the delivery's UPDATE (while pending), for these fields."""
    key = (connection.vendor, attempt_fields, delivery_fields)
    sql = _outcome_sql_cache.get(key)
    if sql is None:
        quote = connection.ops.quote_name
        attempts, deliveries = DeliveryAttempt._meta, Delivery._meta
        insert_columns = [attempts.get_field("delivery").column] + [
            attempts.get_field(f).column for f in attempt_fields
        ]
        assignments = [f"{quote(deliveries.get_field('attempts').column)} = {quote('attempts')} + 1"]
        assignments += [f"{quote(deliveries.get_field(f).column)} = %s" for f in delivery_fields]
        # Identifiers come from the models' metadata, quoted; every value is bound.
        sql = (
            f"INSERT INTO {quote(attempts.db_table)} ({', '.join(map(quote, insert_columns))}) "  # noqa: S608
            f"VALUES ({', '.join(['%s'] * len(insert_columns))})",
            f"UPDATE {quote(deliveries.db_table)} SET {', '.join(assignments)} "  # noqa: S608
            # While pending, said as "not settled" so that the primary key serves it (Delivery.SETTLED).
            f"WHERE {quote(deliveries.pk.column)} = %s AND {quote(deliveries.get_field('status').column)} "
            f"NOT IN ({', '.join(repr(status) for status in Delivery.SETTLED)})",
        )
        _outcome_sql_cache[key] = sql
    return sql


def subscription_rate(work: DeliveryWork) -> ratelimit.Rate | None:
    """The subscription's own rate limit, else HUB_CALLBACK_RATE_LIMIT."""
    try:
        return ratelimit.parse_rate(work.rate_limit or hub_settings.HUB_CALLBACK_RATE_LIMIT)
    except ratelimit.InvalidRate:
        logger.warning("subscription %s has an unreadable rate limit; using the default", work.subscription_id)
        return ratelimit.parse_rate(hub_settings.HUB_CALLBACK_RATE_LIMIT)


def deliveries_enqueue_due(*, limit: int = ENQUEUE_DUE_BATCH) -> int:
    """Send the deliveries that wait in the database and have come due, in bulk; returns how many.

    Rows are taken under a row lock (others skipped), marked queued and enqueued
    after the commit; a crash between the two leaves them queued without a
    message, which the sweep re-sends once they are past the grace period. Their
    due time becomes the time they were sent, as the sweep's own re-sends do: the
    sweep's grace period counts from when the broker got the message, not from a
    due time that may have passed long before (a subscriber back after an hour).
    """
    sent = 0
    while True:
        now = timezone.now()
        with transaction.atomic():
            waiting = Delivery.objects.filter(status=Delivery.Status.PENDING, queued=False, due_at__lte=now)
            if connections["default"].features.has_select_for_update_skip_locked:
                waiting = waiting.select_for_update(skip_locked=True)
            rows = dict(waiting.order_by("due_at").values_list("id", "attempts")[:limit])
            if not rows:
                return sent
            Delivery.objects.filter(pk__in=list(rows)).update(queued=True, due_at=now, updated_at=now)
            transaction.on_commit(lambda rows=rows: queueing.deliveries_enqueue(list(rows), retries=rows))
        sent += len(rows)
        if len(rows) < limit:
            return sent
