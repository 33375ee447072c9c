"""Database side of the benchmark, run as a subprocess with the hub's environment.

It uses the project's ORM and selectors (django.setup() with the bench
DATABASE_URL) and prints one JSON document on stdout. Commands:

    reset                         empty the hub's tables (the bench database only)
    seed --topic T --count N --base URL [--hang-every K] [--hang-prefix P]
                                  verified subscriptions, created directly
    notifications                 id, created_at, spread_at of every notification
    deliveries                    deliveries by status
    matching --sizes 1000,1000000 --topics-per-sub 0.1
                                  time subscriptions_matching at each size, with EXPLAIN
    sweep                         one run of the hub's sweep (sets the broker marker of a flushed broker)
    waiting-seed --count N --subscriptions S --base URL
                                  N pending deliveries after one failed attempt, queued=False (COPY),
                                  parked a day ahead (needs Delivery.queued and hub.enqueue_due)
    waiting-due --seconds D       make every waiting delivery due D seconds from now
    purge-seed --count N --fanout F --base URL
                                  N settled deliveries (F per notification) with their notifications and
                                  attempts, older than HUB_RETENTION_DAYS (INSERT ... SELECT, PostgreSQL only)
    purge [--batch B]             one retention purge (services.retention_purge, what hub.purge and hub_purge
                                  run), timed batch by batch

Why one file of about 600 lines: it is one command-line tool of independent
subcommands (a `cmd_*` function each, above), run by bench.py as a subprocess;
each command reads alone, beside the few seeding helpers they share.
"""

import argparse
import json
import os
import random
import statistics
import sys
import time
import uuid
from dataclasses import fields
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "websubhub.settings")

import django  # noqa: E402

django.setup()

from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from subscriptions.models import Delivery, DeliveryAttempt, Notification, Subscription  # noqa: E402
from subscriptions.selectors import subscriptions_matching  # noqa: E402
from subscriptions.topics import publish_keys, subscription_key  # noqa: E402

LEASE_SECONDS = 30 * 24 * 3600
SEED_BATCH = 5000
# The notification the matching scenario looks up: depth 6, every prefix subscribed.
PROBE_TOPIC = "probe.alpha.beta.gamma.delta.epsilon"
PROBE_CALLBACKS_PER_KEY = 10
# Words of generated topic segments: few enough that topics share prefixes.
WORDS = [f"w{i}" for i in range(16)]
ROOTS = 1000
MATCH_REPEATS = 30


def out(data: object) -> None:
    print(json.dumps(data, default=str))


def cmd_reset(_args: argparse.Namespace) -> None:
    from django.apps import apps

    # Every table of the app, including ones added after this benchmark was written.
    tables = [m._meta.db_table for m in apps.get_app_config("subscriptions").get_models()]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
        else:
            for table in tables:
                cursor.execute(f"DELETE FROM {table}")  # noqa: S608 - model table names
    out({"reset": tables})


def _verified_subscription(*, topic: str, key: str, callback: str, now: datetime) -> Subscription:
    """An unsaved verified, active subscription with a month's lease, signed with the bench's secret."""
    return Subscription(
        topic=topic,
        topic_key=key,
        callback=callback,
        secret="bench-secret",  # noqa: S106 - signs bench deliveries, like a subscriber's secret
        lease_seconds=LEASE_SECONDS,
        expires_at=now + timedelta(seconds=LEASE_SECONDS),
        verified_at=now,
        state=Subscription.State.ACTIVE,
    )


def cmd_seed(args: argparse.Namespace) -> None:
    now = timezone.now()
    key = subscription_key(args.topic)
    rows = []
    started = time.perf_counter()
    for i in range(args.count):
        hang = args.hang_every and i % args.hang_every == 0
        path = f"{args.hang_prefix}{i}" if hang else f"/cb/{i}"
        rows.append(_verified_subscription(topic=args.topic, key=key, callback=f"{args.base}{path}", now=now))
    with transaction.atomic():
        Subscription.objects.bulk_create(rows, batch_size=SEED_BATCH)
    out({"seeded": args.count, "seconds": time.perf_counter() - started})


def cmd_notifications(_args: argparse.Namespace) -> None:
    rows = Notification.objects.order_by("id").values_list("id", "created_at", "spread_at")
    out([[pk, created.timestamp(), spread.timestamp() if spread else None] for pk, created, spread in rows])


def cmd_deliveries(_args: argparse.Namespace) -> None:
    from django.db.models import Count

    counts = dict(Delivery.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    out(counts)


# --- Matching at scale ------------------------------------------------------------


def _generated_topics(count: int, rng: random.Random) -> list[str]:
    topics: set[str] = set()
    while len(topics) < count:
        depth = rng.randint(2, 6)
        topics.add(".".join([f"r{rng.randrange(ROOTS)}"] + [rng.choice(WORDS) for _ in range(depth - 1)]))
    return sorted(topics)


def _copy_value(value: object) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value).replace("\\", "\\\\").replace("\t", " ").replace("\n", " ")


def _copy_model(model, fixed: dict[str, object], varying: tuple[str, ...], rows) -> float:
    """COPY rows of `model` in: `varying` columns (attnames) from each row, `fixed` values for the rest.

    Columns come from the model, so fields added later get their defaults. Returns seconds.
    """
    table = model._meta.db_table
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    template = []
    for field in fields:
        if field.attname in varying:
            template.append(None)
        elif field.attname in fixed:
            template.append(_copy_value(fixed[field.attname]))
        else:
            template.append(_copy_value(field.get_default()))
    index = {f.attname: i for i, f in enumerate(fields)}
    slots = [index[name] for name in varying]
    columns = ", ".join(f'"{f.column}"' for f in fields)
    started = time.perf_counter()
    statement = f"COPY {table} ({columns}) FROM STDIN"
    with connection.cursor() as cursor, transaction.atomic(), cursor.cursor.copy(statement) as copy:
        lines = []
        for row in rows:
            values = list(template)
            for slot, value in zip(slots, row, strict=True):
                values[slot] = _copy_value(value)
            lines.append("\t".join(values) + "\n")
            if len(lines) >= 50_000:
                copy.write("".join(lines))
                lines = []
        if lines:
            copy.write("".join(lines))
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {table}")
    return time.perf_counter() - started


def _copy_subscriptions(rows: list[tuple[str, str]]) -> float:
    """COPY (topic_key, callback) rows in as verified subscriptions; returns seconds."""
    now = timezone.now()
    fixed = {
        "lease_seconds": LEASE_SECONDS,
        "expires_at": now + timedelta(seconds=LEASE_SECONDS),
        "verified_at": now,
        "created_at": now,
        "updated_at": now,
        "state": Subscription.State.ACTIVE,
        "secret": "",
    }
    return _copy_model(Subscription, fixed, ("topic", "topic_key", "callback"), ((k, k, c) for k, c in rows))


def _captured_sql(keys: list[str], now) -> tuple[str, tuple]:
    """The SQL the selector runs (captured, not rebuilt, so it follows the code)."""
    captured: list[tuple[str, tuple]] = []

    def wrapper(execute, sql, params, many, context):
        captured.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper), transaction.atomic():
        list(subscriptions_matching(keys, now=now))
    selects = [(sql, params) for sql, params in captured if "SELECT" in sql.upper()]
    return selects[0] if selects else ("", ())


def _measure(keys: list[str]) -> dict:
    now = timezone.now()
    started = time.perf_counter()
    first = list(subscriptions_matching(keys, now=now))
    cold = time.perf_counter() - started
    times = []
    for _ in range(MATCH_REPEATS):
        started = time.perf_counter()
        with transaction.atomic():
            found = list(subscriptions_matching(keys, now=now))
        times.append(time.perf_counter() - started)
    times.sort()
    sql, params = _captured_sql(keys, now)
    plan = ""
    if sql and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
    return {
        "matched": len(found),
        "first_ms": cold * 1000,
        "median_ms": statistics.median(times) * 1000,
        "p95_ms": times[int(len(times) * 0.95) - 1] * 1000,
        "sql": sql,
        "explain": plan,
        "consistent": len(first) == len(found),
    }


def cmd_matching(args: argparse.Namespace) -> None:
    if connection.vendor != "postgresql":
        raise SystemExit("matching needs PostgreSQL")
    sizes = sorted(int(s) for s in args.sizes.split(","))
    rng = random.Random(5)
    keys = publish_keys(PROBE_TOPIC)
    probe_rows = [(key, f"http://127.0.0.1:9/probe/{n}") for key in keys for n in range(PROBE_CALLBACKS_PER_KEY)]
    results = []
    inserted = 0
    # The probe's rows go in first and stay: the matched set is the same at every size.
    insert_seconds = _copy_subscriptions(probe_rows)
    inserted += len(probe_rows)
    for size in sizes:
        need = size - inserted
        if need > 0:
            topics = _generated_topics(max(1, int(need * args.topics_per_sub)), rng)
            rows = [(rng.choice(topics), f"http://127.0.0.1:9/m/{inserted + j}") for j in range(need)]
            insert_seconds = _copy_subscriptions(rows)
            inserted += need
        else:
            insert_seconds = 0.0
        result = _measure(keys)
        generated = len(topics) if need > 0 else 0
        result.update({"size": inserted, "generated_topics": generated, "insert_s": insert_seconds})
        results.append(result)
    out({"probe_topic": PROBE_TOPIC, "keys": keys, "results": results})


# --- Deliveries waiting for their retry -------------------------------------------------

# What the waiting scenario needs from the hub (issue 11): the flag and the periodic task that reads it.
WAITING_FIELD = "queued"
ENQUEUE_DUE_TASK = "hub.enqueue_due"
# Where the seeded deliveries are due until `waiting-due` sets the real time: far enough never to come,
# and beyond the bench's sweep grace (HUB_SWEEP_GRACE_SECONDS, one day), the horizon of a broker recovery.
WAITING_PARKED = timedelta(days=7)


def _require_waiting_support() -> None:
    from django.conf import settings

    fields = {f.name for f in Delivery._meta.concrete_fields}
    if WAITING_FIELD not in fields:
        raise SystemExit(
            f"the waiting scenario needs Delivery.{WAITING_FIELD} (True when a broker message exists, False = "
            f"waiting in the database only) and the periodic task {ENQUEUE_DUE_TASK} (issue 11); "
            f"this checkout has neither field nor task"
        )
    scheduled = {entry.get("task") for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    if ENQUEUE_DUE_TASK not in scheduled:
        raise SystemExit(
            f"the waiting scenario needs {ENQUEUE_DUE_TASK} in CELERY_BEAT_SCHEDULE (issue 11); scheduled: "
            f"{', '.join(sorted(t for t in scheduled if t))}"
        )


def cmd_sweep(_args: argparse.Namespace) -> None:
    """One run of the hub's periodic sweep (services.hub_sweep), as beat would start it.

    On a freshly flushed broker it finds the broker's marker gone, re-sends what
    the database owes (nothing, on an empty database) and sets the marker: the
    state of a hub that has been running, whose broker kept its data.
    """
    from subscriptions import services

    out({"sent": services.hub_sweep(), "marker": services.broker_marker_read()})


def cmd_waiting_seed(args: argparse.Namespace) -> None:
    """`count` pending deliveries after one failed attempt, waiting in the database only (queued=False).

    They are spread evenly over `subscriptions` verified subscriptions at `base`/wait/<i>,
    one notification each per subscription (count / subscriptions notifications),
    and parked one day ahead: `waiting-due` sets when they are really due.
    """
    _require_waiting_support()
    started = time.perf_counter()
    now = timezone.now()
    topic = "BENCH.WAITING.topic"
    key = subscription_key(topic)
    subscriptions = [
        _verified_subscription(topic=topic, key=key, callback=f"{args.base}/wait/{i}", now=now)
        for i in range(args.subscriptions)
    ]
    per_subscription = -(-args.count // args.subscriptions)
    with transaction.atomic():
        subscriptions = Subscription.objects.bulk_create(subscriptions, batch_size=SEED_BATCH)
        notifications = Notification.objects.bulk_create(
            [
                Notification(
                    topic=topic,
                    content=json.dumps({"seq": seq, "t": now.timestamp()}).encode(),
                    content_type="application/json",
                    spread_at=now,
                )
                for seq in range(per_subscription)
            ],
            batch_size=SEED_BATCH,
        )
    pairs = ((n, s) for n in notifications for s in subscriptions)
    rows = (
        (uuid.uuid4(), note.pk, sub.pk, sub.callback) for _, (note, sub) in zip(range(args.count), pairs, strict=False)
    )
    fixed = {
        "status": Delivery.Status.PENDING,
        "attempts": 1,
        "last_status_code": 503,
        "last_error": "HTTP 503",
        "last_attempt_at": now,
        "due_at": now + WAITING_PARKED,
        WAITING_FIELD: False,
        "created_at": now,
        "updated_at": now,
    }
    copy_seconds = _copy_model(Delivery, fixed, ("uuid", "notification_id", "subscription_id", "callback"), rows)
    waiting = Delivery.objects.filter(status=Delivery.Status.PENDING, **{WAITING_FIELD: False}).count()
    out(
        {
            "deliveries": waiting,
            "subscriptions": len(subscriptions),
            "notifications": len(notifications),
            "copy_seconds": copy_seconds,
            "seconds": time.perf_counter() - started,
        }
    )


def cmd_waiting_due(args: argparse.Namespace) -> None:
    """Every waiting delivery due `seconds` from now (one UPDATE); prints the due time (epoch seconds)."""
    _require_waiting_support()
    due = timezone.now() + timedelta(seconds=args.seconds)
    updated = Delivery.objects.filter(status=Delivery.Status.PENDING, **{WAITING_FIELD: False}).update(due_at=due)
    out({"due": due.timestamp(), "updated": updated})


# --- Settled deliveries past retention (the purge scenario) -----------------------------

PURGE_TOPIC = "BENCH.PURGE.old"
# One delivery in this many failed (after FAILED_ATTEMPTS attempts); the others were delivered at the first.
FAILED_EVERY = 10
FAILED_ATTEMPTS = 3
# The seeded notifications are spread over this many days before the retention cutoff, one day past it at the
# youngest: a month of history that has aged out.
PURGE_SEED_DAYS = 30


def _insert_select(model, expressions: dict[str, str], source: str, params: dict[str, object]) -> int:
    """INSERT INTO model's table (every concrete column) SELECT `expressions` FROM `source`; rows inserted.

    `expressions` maps attnames to SQL over `source`; every other column gets the
    field's default, so that fields added later stay valid. `params` are named
    (%(name)s) parameters of the expressions and of `source`.
    """
    columns, values, params = [], [], dict(params)
    for field in model._meta.concrete_fields:
        if field.primary_key:
            continue
        columns.append(connection.ops.quote_name(field.column))
        if field.attname in expressions:
            values.append(expressions[field.attname])
        else:
            name = f"default_{field.attname}"
            params[name] = field.get_db_prep_save(field.get_default(), connection)
            values.append(f"%({name})s")
    table = model._meta.db_table
    statement = f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(values)} FROM {source}"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.rowcount


def cmd_purge_seed(args: argparse.Namespace) -> None:
    """`count` settled deliveries, `fanout` per notification, with their attempts, all past retention.

    Set-based on the server (INSERT ... SELECT over generate_series and a cross
    join), then VACUUM ANALYZE, so that 1,000,000 take a minute or two, not an
    hour of ORM round trips. The subscriptions (`fanout` of them, callbacks at
    `base`/old/<i>) are on a topic nobody publishes to.
    """
    from django.conf import settings

    if connection.vendor != "postgresql":
        raise SystemExit("purge-seed needs PostgreSQL (generate_series, gen_random_uuid); SQLite is not supported")
    if not settings.HUB_RETENTION_DAYS:
        raise SystemExit("HUB_RETENTION_DAYS is 0: nothing is ever past retention")
    started = time.perf_counter()
    now = timezone.now()
    key = subscription_key(PURGE_TOPIC)
    subscriptions = [
        _verified_subscription(topic=PURGE_TOPIC, key=key, callback=f"{args.base}/old/{i}", now=now)
        for i in range(args.fanout)
    ]
    notifications = -(-args.count // args.fanout)
    youngest = now - timedelta(days=settings.HUB_RETENTION_DAYS + 1)
    # Spread evenly over PURGE_SEED_DAYS before `youngest`, oldest first (ids grow with time, as in a real hub).
    step = timedelta(days=PURGE_SEED_DAYS) / max(1, notifications)
    params = {
        "topic": PURGE_TOPIC,
        "youngest": youngest,
        "step": step,
        "n": notifications,
        "count": args.count,
        "failed": Delivery.Status.FAILED.value,
        "delivered": Delivery.Status.DELIVERED.value,
        "failed_every": FAILED_EVERY,
        "failed_attempts": FAILED_ATTEMPTS,
        "content": json.dumps({"bench": "purge", "pad": "x" * 200}).encode(),
    }
    timings = {}
    with transaction.atomic():
        Subscription.objects.bulk_create(subscriptions, batch_size=SEED_BATCH)
        at = time.perf_counter()
        created = "%(youngest)s::timestamptz - (%(n)s - g) * %(step)s::interval"
        inserted_notifications = _insert_select(
            Notification,
            {
                "topic": "%(topic)s",
                "content": "%(content)s",
                "content_type": "'application/json'",
                "created_at": created,
                "updated_at": created,
                "spread_at": created,
            },
            "generate_series(1, %(n)s) AS g",
            params,
        )
        timings["notifications_s"] = time.perf_counter() - at
        at = time.perf_counter()
        # Every notification x every subscription of the topic, the first `count` pairs; one in FAILED_EVERY failed.
        failed = "(n.id + s.id) %% %(failed_every)s = 0"
        inserted_deliveries = _insert_select(
            Delivery,
            {
                "uuid": "gen_random_uuid()",
                "notification_id": "n.id",
                "subscription_id": "s.id",
                "callback": "s.callback",
                "status": f"CASE WHEN {failed} THEN %(failed)s ELSE %(delivered)s END",
                "attempts": f"CASE WHEN {failed} THEN %(failed_attempts)s ELSE 1 END",
                "last_status_code": f"CASE WHEN {failed} THEN 503 ELSE 204 END",
                "last_error": f"CASE WHEN {failed} THEN 'HTTP 503' ELSE '' END",
                "last_attempt_at": "n.created_at + interval '1 second'",
                "delivered_at": f"CASE WHEN {failed} THEN NULL ELSE n.created_at + interval '1 second' END",
                "due_at": "n.created_at",
                "created_at": "n.created_at",
                "updated_at": "n.created_at + interval '1 second'",
            },
            f"{Notification._meta.db_table} n CROSS JOIN {Subscription._meta.db_table} s"
            " WHERE n.topic = %(topic)s AND s.topic = %(topic)s ORDER BY n.id, s.id LIMIT %(count)s",
            params,
        )
        timings["deliveries_s"] = time.perf_counter() - at
        at = time.perf_counter()
        inserted_attempts = _insert_select(
            DeliveryAttempt,
            {
                "delivery_id": "d.id",
                "number": "k",
                "started_at": "d.created_at + k * interval '1 second'",
                "duration_ms": "40",
                "status_code": "d.last_status_code",
                "error": "d.last_error",
            },
            f"{Delivery._meta.db_table} d JOIN {Notification._meta.db_table} n ON n.id = d.notification_id"
            " CROSS JOIN LATERAL generate_series(1, d.attempts) AS k WHERE n.topic = %(topic)s",
            params,
        )
        timings["attempts_s"] = time.perf_counter() - at
    at = time.perf_counter()
    tables = [m._meta.db_table for m in (Notification, Delivery, DeliveryAttempt, Subscription)]
    with connection.cursor() as cursor:
        # As a hub's old rows would be: all-visible, with statistics the planner can use.
        cursor.execute(f"VACUUM ANALYZE {', '.join(tables)}")
    timings["vacuum_s"] = time.perf_counter() - at
    out(
        {
            "notifications": inserted_notifications,
            "deliveries": inserted_deliveries,
            "attempts": inserted_attempts,
            "subscriptions": len(subscriptions),
            "retention_days": settings.HUB_RETENTION_DAYS,
            "youngest": youngest.isoformat(),
            "seconds": time.perf_counter() - started,
            **timings,
        }
    )


def cmd_purge(args: argparse.Namespace) -> None:
    """One retention purge as hub_purge runs it (no time budget), with the time of every batch.

    Prints the counts, the wall-clock start and end (epoch seconds, the sink's
    clock), and the batches' durations (time between two progress calls).
    """
    from subscriptions import services
    from subscriptions.services import retention

    marks: list[tuple[float, int]] = []

    def progress(counts: services.PurgeCounts) -> None:
        marks.append((time.monotonic(), counts.rows))

    batch = args.batch or retention.PURGE_BATCH
    start_wall, start = time.time(), time.monotonic()
    counts = services.retention_purge(batch=batch, progress=progress)
    end_wall, end = time.time(), time.monotonic()
    durations, previous = [], start
    for at, _rows in marks:
        durations.append(at - previous)
        previous = at
    out(
        {
            "counts": {f.name: getattr(counts, f.name) for f in fields(counts)},
            "rows": counts.rows,
            "start": start_wall,
            "end": end_wall,
            "seconds": end - start,
            "batch": batch,
            "notification_batch": retention.NOTIFICATION_BATCH,
            "task_time_budget": retention.TASK_TIME_BUDGET,
            "batches": len(durations),
            "batch_seconds": sorted(durations),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("reset")
    seed = sub.add_parser("seed")
    seed.add_argument("--topic", required=True)
    seed.add_argument("--count", type=int, required=True)
    seed.add_argument("--base", required=True)
    seed.add_argument("--hang-every", type=int, default=0)
    seed.add_argument("--hang-prefix", default="/hang/")
    sub.add_parser("notifications")
    sub.add_parser("deliveries")
    sub.add_parser("sweep")
    waiting_seed = sub.add_parser("waiting-seed")
    waiting_seed.add_argument("--count", type=int, required=True)
    waiting_seed.add_argument("--subscriptions", type=int, required=True)
    waiting_seed.add_argument("--base", required=True)
    waiting_due = sub.add_parser("waiting-due")
    waiting_due.add_argument("--seconds", type=float, required=True)
    purge_seed = sub.add_parser("purge-seed")
    purge_seed.add_argument("--count", type=int, required=True)
    purge_seed.add_argument("--fanout", type=int, required=True)
    purge_seed.add_argument("--base", required=True)
    purge = sub.add_parser("purge")
    purge.add_argument("--batch", type=int, default=0, help="rows per statement (0: the service's default)")
    matching = sub.add_parser("matching")
    matching.add_argument("--sizes", default="1000,1000000")
    matching.add_argument("--topics-per-sub", type=float, default=0.1)
    args = parser.parse_args()
    {
        "reset": cmd_reset,
        "seed": cmd_seed,
        "notifications": cmd_notifications,
        "deliveries": cmd_deliveries,
        "matching": cmd_matching,
        "sweep": cmd_sweep,
        "waiting-seed": cmd_waiting_seed,
        "waiting-due": cmd_waiting_due,
        "purge-seed": cmd_purge_seed,
        "purge": cmd_purge,
    }[args.command](args)


if __name__ == "__main__":
    main()
