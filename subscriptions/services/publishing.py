"""Publishing: notifications, publish pings and the thin-ping fetch, and the spread into deliveries."""

import contextlib
import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import requests
from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Q
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

from subscriptions import http, metrics, netguard, rules
from subscriptions.errors import DeliveryFailed, HubError
from subscriptions.models import Delivery, Notification, Subscription
from subscriptions.selectors import subscriptions_matching
from subscriptions.services import queueing, spread_sender
from subscriptions.topics import is_url_topic, publish_keys
from websubhub.celery import app as celery_app
from websubhub.hub_settings import hub_settings
from websubhub.queues import TaskName

# Every service module logs as "subscriptions.services", the one logger they shared
# before the package was split: log configuration and readers select that name.
logger = logging.getLogger("subscriptions.services")


@dataclass(frozen=True)
class PublishPing:
    """What a publish ping came to: `topics` fetches queued, or none and the throttle's `wait` (seconds)."""

    topics: int
    wait: float | None = None


def _publish_allowed(topic: str) -> bool:
    """Whether HUB_PUBLISH_ALLOWED_TOPICS admits topic; ForbiddenDestination when topic cannot be read as a URL."""
    prefixes = hub_settings.HUB_PUBLISH_ALLOWED_TOPICS
    return not prefixes or netguard.url_admitted(topic, prefixes)


def publish_ping(*, topics: list[str], throttle: Callable[[], float | None] = lambda: None) -> PublishPing:
    """Queue a fetch of each topic a publisher pinged (each once); raises HubError when one is refused.

    Every topic is checked (a URL, on the allow-list, to an address the hub may
    reach) before anything is queued; `throttle()` is asked only then, so a refused
    ping costs the publisher nothing, and a wait it returns queues nothing.
    """
    unique = list(dict.fromkeys(topics))
    for topic in unique:
        rules.topic_keys_for_publish(topic)
        rules.topic_events_publish_refuse(topic)
        if not is_url_topic(topic):
            raise HubError(
                "hub.mode=publish fetches the topic, so it must be an http(s) URL; "
                "publish to a dotted topic with POST /api/notifications/"
            )
        try:
            if not _publish_allowed(topic):
                raise HubError(
                    "this hub does not take publish pings for that topic (HUB_PUBLISH_ALLOWED_TOPICS)", status=403
                )
            netguard.check_url_with_settings(topic)
        except netguard.ForbiddenDestination as exc:
            raise HubError(f"hub.topic refused: {exc}") from None
    wait = throttle()
    if wait is not None:
        return PublishPing(topics=0, wait=wait)
    try:
        with celery_app.producer_or_acquire() as producer:
            for topic in unique:
                celery_app.send_task(TaskName.FETCH_TOPIC, kwargs={"topic": topic}, producer=producer)
    except KombuOperationalError:
        logger.exception("publish ping for %s topic(s) could not be queued", len(unique))
        raise HubError("the hub cannot queue work right now; try again shortly", status=503) from None
    return PublishPing(topics=len(unique))


def notification_publish(
    *,
    topic: str,
    content: bytes,
    content_type: str,
    in_transaction: Callable[[Notification], None] | None = None,
    hub_event: bool = False,
) -> Notification:
    """Store a notification and enqueue its spread once committed; raises HubError when invalid.

    The row is the record: if the broker cannot take the spread message now,
    the periodic sweep sends it later. `in_transaction(notification)` runs in the
    transaction that stores it (the Idempotency-Key's INSERT): when it raises,
    nothing is stored and nothing spreads. Only the hub's own operational events
    (`hub_event`, from services/events.py) may be published on `hub.events`.
    """
    rules.topic_keys_for_publish(topic)
    if not hub_event:
        rules.topic_events_publish_refuse(topic)
    if len(content) > hub_settings.HUB_MAX_CONTENT_BYTES:
        raise HubError(
            f"content is larger than HUB_MAX_CONTENT_BYTES ({hub_settings.HUB_MAX_CONTENT_BYTES} bytes)",
            413,
            field="content",
        )
    # One statement needs no transaction of its own (nor its COMMIT round trip): in autocommit mode the
    # INSERT commits by itself and the spread is sent at once (what on_commit would do, without its lookups);
    # inside a transaction, the caller's or the Idempotency-Key's, it waits for the commit.
    connection = connections["default"]
    with transaction.atomic() if in_transaction is not None else contextlib.nullcontext():
        notification = _notification_insert(connection, topic=topic, content=content, content_type=content_type)
        notification_id = notification.pk
        if in_transaction is not None:
            in_transaction(notification)
        if connection.in_atomic_block:
            transaction.on_commit(lambda: _send_spread(notification_id))
        else:
            _send_spread(notification_id)
    logger.info("notification %s published on %s (%s bytes)", notification_id, topic, len(content))
    metrics.notification_accepted()
    return notification


# The columns a published notification is stored with (spread_at starts NULL), for _notification_insert.
_NOTIFICATION_COLUMNS = ("created_at", "updated_at", "topic", "content", "content_type")


@functools.cache
def _notification_insert_statement(alias: str, vendor: str) -> tuple[tuple[Field, ...], str, bool]:
    """The fields, the INSERT statement and whether it returns the id, for one database (worked out once)."""
    connection = connections[alias]
    fields = tuple(Notification._meta.get_field(name) for name in _NOTIFICATION_COLUMNS)
    quote = connection.ops.quote_name
    table, columns = quote(Notification._meta.db_table), ", ".join(quote(field.column) for field in fields)
    returning = connection.features.can_return_columns_from_insert
    sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"  # noqa: S608 - model names
    if returning:
        sql += " RETURNING id"
    return fields, sql, returning


def _notification_insert(
    connection: BaseDatabaseWrapper, *, topic: str, content: bytes, content_type: str
) -> Notification:
    """Store one notification with one INSERT statement, as `Notification.objects.create` would.

    The model's save() path (signals, field pre-save hooks, the SQL compiled per
    call) was about a tenth of the web's CPU per publish (bench/RESULTS.md);
    the values still go through each field's own conversion for the database.
    """
    now = timezone.now()
    notification = Notification(topic=topic, content=content, content_type=content_type, created_at=now, updated_at=now)
    fields, sql, returning = _notification_insert_statement(connection.alias, connection.vendor)
    values = [field.get_db_prep_save(getattr(notification, field.attname), connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        notification.pk = cursor.fetchone()[0] if returning else cursor.lastrowid
    notification._state.adding = False
    notification._state.db = connection.alias
    return notification


def notification_publish_json(
    *, topic: str, content: Any, in_transaction: Callable[[Notification], None] | None = None
) -> Notification:
    return notification_publish(
        topic=topic, content=json_body(content), content_type="application/json", in_transaction=in_transaction
    )


def json_body(content: Any) -> bytes:
    """The bytes a JSON API notification delivers: compact JSON in UTF-8."""
    return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _send_spread(notification_id: int) -> None:
    """Send a committed notification to spread; a failure is logged, never raised (the sweep sends it later).

    A web process's sender thread sends it with others (services/spread_sender.py); elsewhere, here and now.
    """
    try:
        if not spread_sender.sender.submit(notification_id):
            celery_app.send_task(TaskName.SPREAD, kwargs={"notification_id": notification_id})
    except Exception:
        # The row is committed and the publisher gets its 202: the sweep sends the spread after
        # HUB_SWEEP_GRACE_SECONDS (as on_commit(robust=True) did, which logged and went on).
        logger.exception("notification %s: its spread message could not be sent now; the sweep will", notification_id)


# A spread sends its deliveries' messages once it has created this many (or all of them). Until then no
# delivery starts, so the deliveries the first batches would release do not take the process's CPU (the GIL)
# from the spread: a 10,000-callback spread took 4 s beside them, of which its own work was under one.
# A crash before the send leaves committed rows and no messages: the spread task, acknowledged late, runs
# again and sends every pending delivery it finds (and the sweep would too).
SPREAD_HOLD = queueing.PUBLISH_BATCH


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
    batch: list[NewDelivery] = []
    # Created and committed, not yet sent: sent together once there are SPREAD_HOLD of them, or at the end.
    held: list[int] = []
    now = timezone.now()
    for match in subscriptions_matching(keys, now=now):
        # Parked behind a pause: no message; hub.enqueue_due sends it at the probe time.
        batch.append(
            NewDelivery(match.subscription_id, match.callback, match.parked_until or now, match.parked_until is None)
        )
        if len(batch) >= queueing.SPREAD_BATCH:
            held += _deliveries_create(notification_id, batch)
            batch = []
        if len(held) >= SPREAD_HOLD:
            enqueued, held = enqueued + _deliveries_send(held), []
    if batch:
        held += _deliveries_create(notification_id, batch)
    enqueued += _deliveries_send(held)
    Notification.objects.filter(pk=notification_id, spread_at__isnull=True).update(spread_at=timezone.now())
    logger.info("notification %s spread: %s deliveries enqueued", notification_id, enqueued)
    return enqueued


class NewDelivery(NamedTuple):
    """A delivery a spread creates (a plain tuple: a model instance per row cost more than its insert)."""

    subscription_id: int
    callback: str
    due_at: datetime
    queued: bool


def _deliveries_send(ids: list[int]) -> int:
    # On commit: called inside a transaction, no message goes out before its row is committed.
    if ids:
        transaction.on_commit(lambda: queueing.deliveries_enqueue(ids))
    return len(ids)


def _deliveries_create(notification_id: int, batch: list[NewDelivery]) -> list[int]:
    """Insert a batch of deliveries (committed); returns the ids of those to send now."""
    now = timezone.now()
    ids = _deliveries_insert(notification_id, batch, now=now)
    parked = {d.subscription_id for d in batch if d.due_at > now}
    if parked:
        # Written after the subscriptions were read as paused: one that resumed
        # since released its parked deliveries without these (see breaker.delivery_park).
        still_paused = Subscription.objects.filter(pk__in=parked, state=Subscription.State.PAUSED)
        resumed = parked - set(still_paused.values_list("pk", flat=True))
        if resumed:
            queueing.deliveries_release(Q(notification_id=notification_id, subscription_id__in=resumed))
    return ids


def _deliveries_insert(notification_id: int, batch: list[NewDelivery], *, now: datetime) -> list[int]:
    """Insert the batch's deliveries, skipping any that exist (a spread run again); returns those to send now.

    Those are the batch's pending deliveries due by `now`, new or left by an
    earlier run. On PostgreSQL one statement whatever the batch's size (arrays
    unnested, uuids made by the server, the ids returned); Django's bulk_create
    builds every row's values in Python, which cost more than the rest of a
    10,000-callback spread.
    """
    connection = connections["default"]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                _DELIVERIES_INSERT_SQL,
                {
                    "notification": notification_id,
                    "now": now,
                    "subscriptions": [d.subscription_id for d in batch],
                    "callbacks": [d.callback for d in batch],
                    "due": [d.due_at for d in batch],
                    "queued": [d.queued for d in batch],
                },
            )
            return [row[0] for row in cursor.fetchall()]
    Delivery.objects.bulk_create(
        [
            Delivery(
                notification_id=notification_id,
                subscription_id=d.subscription_id,
                callback=d.callback,
                due_at=d.due_at,
                queued=d.queued,
            )
            for d in batch
        ],
        ignore_conflicts=True,
    )
    return list(
        Delivery.objects.filter(
            notification_id=notification_id,
            subscription_id__in=[d.subscription_id for d in batch],
            status=Delivery.Status.PENDING,
            due_at__lte=now,
        ).values_list("id", flat=True)
    )


# The columns a new delivery starts with (the model's defaults), for _deliveries_insert. The
# statements of a WITH run on one snapshot: `earlier` sees only rows an earlier run left, never
# the ones `created` inserts, so no delivery is returned twice.
_DELIVERIES_INSERT_SQL = f"""
WITH batch AS (
    SELECT * FROM unnest(%(subscriptions)s::bigint[], %(callbacks)s::text[], %(due)s::timestamptz[],
                         %(queued)s::boolean[]) AS t(subscription_id, callback, due_at, queued)
), created AS (
    INSERT INTO {Delivery._meta.db_table}
        (uuid, notification_id, subscription_id, callback, due_at, queued,
         status, attempts, last_error, created_at, updated_at)
    SELECT gen_random_uuid(), %(notification)s, b.subscription_id, b.callback, b.due_at, b.queued,
           '{Delivery.Status.PENDING.value}', 0, '', %(now)s::timestamptz, %(now)s::timestamptz
    FROM batch b
    ON CONFLICT DO NOTHING
    RETURNING id, due_at
), earlier AS (
    SELECT d.id FROM {Delivery._meta.db_table} d JOIN batch b ON d.subscription_id = b.subscription_id
    WHERE d.notification_id = %(notification)s AND d.status = '{Delivery.Status.PENDING.value}'
      AND d.due_at <= %(now)s::timestamptz
)
SELECT id FROM created WHERE due_at <= %(now)s::timestamptz
UNION ALL
SELECT id FROM earlier
"""  # noqa: S608 - the table name and a status constant come from the model


def topic_fetch_and_publish(*, topic: str) -> Notification:
    """Fetch a topic URL (redirects followed, size capped) and publish its body and Content-Type verbatim.

    Raises DeliveryFailed on a transport error or a non-2xx answer (retried),
    HubError when the content is too large (not retried).
    """
    limit = hub_settings.HUB_MAX_CONTENT_BYTES
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
