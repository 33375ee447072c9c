"""A worker holds at most DATABASE_POOL_MAX_SIZE PostgreSQL connections, whatever its thread count.

A real worker with 32 threads delivers a batch to a real subscriber that takes
a while to answer, while the test counts the worker's connections in
pg_stat_activity (the worker connects under its own application_name).
"""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from subscriptions.models import Delivery, Notification, Subscription
from subscriptions.topics import subscription_key
from tests.support.processes import ROOT, WORKER_ENV, _database_url
from tests.support.subscriber import Subscriber, wait_until
from websubhub.celery import app

pytestmark = pytest.mark.e2e

THREADS = 32
POOL_SIZE = 4
DELIVERIES = 160
# Each POST waits this long at the subscriber (seconds): a thread that kept its
# connection through it would serialise the batch behind POOL_SIZE connections.
ANSWER_DELAY = 0.2


def _batch(subscriber: Subscriber) -> list[int]:
    """DELIVERIES pending deliveries of one notification, each to its own subscription."""
    now = timezone.now()
    topic = "pool.test"
    notification = Notification.objects.create(topic=topic, content=b'{"n":1}', content_type="application/json")
    subscriptions = Subscription.objects.bulk_create(
        Subscription(
            topic=topic,
            topic_key=subscription_key(topic),
            callback=subscriber.url(f"/pool/{n}"),
            lease_seconds=3600,
            verified_at=now,
            expires_at=now + timedelta(hours=1),
        )
        for n in range(DELIVERIES)
    )
    # Due in an hour: a session worker's sweeper, if one runs, leaves them to this worker.
    deliveries = Delivery.objects.bulk_create(
        Delivery(notification=notification, subscription=s, callback=s.callback, due_at=now + timedelta(hours=1))
        for s in subscriptions
    )
    return [d.pk for d in deliveries]


class _ConnectionCounter(threading.Thread):
    """Counts the server's connections of one application_name until stopped; keeps the highest count."""

    def __init__(self, application_name: str) -> None:
        super().__init__(daemon=True)
        self.application_name = application_name
        self.highest = 0
        self.samples = 0
        self.stopping = threading.Event()
        params = connection.get_connection_params()
        params.pop("pool", None)
        params.pop("cursor_factory", None)
        self.params = params

    def run(self) -> None:
        with psycopg.connect(**self.params, autocommit=True) as conn:
            while not self.stopping.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [self.application_name]
                ).fetchone()
                self.highest = max(self.highest, row[0] if row else 0)
                self.samples += 1
                time.sleep(0.005)


def _most_at_once(subscriber: Subscriber) -> int:
    """The most POSTs the subscriber was answering at the same time."""
    starts = sorted(r.at for r in subscriber.deliveries())
    return max((sum(1 for other in starts if start <= other < start + ANSWER_DELAY) for start in starts), default=0)


def test_a_worker_with_32_threads_holds_at_most_its_pool_of_connections(
    transactional_db: None, subscriber: Subscriber, tmp_path: Path
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("counts PostgreSQL connections")
    # given a worker with 32 threads and a pool of 4 connections, on a queue of its own
    queue = f"hub.pool-test-{os.getpid()}"
    application_name = f"hub-pool-test-{uuid.uuid4().hex[:8]}"
    subscriber.post_delay = {f"/pool/{n}": ANSWER_DELAY for n in range(DELIVERIES)}
    ids = _batch(subscriber)
    env = {
        **os.environ,
        **WORKER_ENV,
        "DATABASE_URL": _database_url(),
        "DATABASE_POOL_MAX_SIZE": str(POOL_SIZE),
        "PGAPPNAME": application_name,  # libpq names the worker's connections
        # Nothing defers a delivery: every task runs to its POST.
        "HUB_CALLBACK_MAX_IN_FLIGHT": "0",
        "HUB_CALLBACK_RATE_LIMIT": "off",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = tmp_path / "worker.log"
    command = [sys.executable, "-m", "celery", "-A", "websubhub", "worker", "--pool=threads"]
    command += [f"--concurrency={THREADS}", "--without-gossip", "--without-mingle", "--loglevel=INFO"]
    command += ["-Q", queue, f"--hostname=pool-test-{os.getpid()}@%h"]
    counter = _ConnectionCounter(application_name)
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until(lambda: b" ready." in log.read_bytes() or process.poll() is not None, timeout=60, what="worker")
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        counter.start()
        # when the whole batch is queued at once
        started = time.monotonic()
        with app.producer_or_acquire() as producer:
            for delivery_id in ids:
                app.send_task("hub.deliver", kwargs={"delivery_id": delivery_id}, queue=queue, producer=producer)
        wait_until(
            lambda: Delivery.objects.filter(pk__in=ids, status=Delivery.Status.DELIVERED).count() == DELIVERIES,
            timeout=120,
            what="every delivery",
        )
        elapsed = time.monotonic() - started
    finally:
        counter.stopping.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        counter.join(timeout=5)
    worker_log = log.read_text(errors="replace")
    sys.stderr.write(f"\n{DELIVERIES} deliveries in {elapsed:.2f}s; at most {counter.highest} connections\n")
    # then the worker never held more connections than its pool
    assert counter.samples > 10
    assert 1 <= counter.highest <= POOL_SIZE, worker_log[-3000:]
    # and its threads still sent many requests at once: none kept a connection while waiting on a callback
    assert _most_at_once(subscriber) > 2 * POOL_SIZE
    # and no thread waited past the pool's timeout (a database error would retry the delivery)
    assert Delivery.objects.filter(pk__in=ids, attempts=1).count() == DELIVERIES
    assert "OperationalError" not in worker_log and "PoolTimeout" not in worker_log
