"""Shared fixtures: a real Celery worker process and real subscriber servers on 127.0.0.1.

The worker runs `celery -A websubhub worker --beat` as a subprocess against the
broker the settings name (Redis when REDIS_URL is set, else the filesystem
broker) and the test database, so end-to-end tests use `transactional_db`:
their rows are committed where the worker can see them.
"""

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client

from tests.support.auth import api_client
from tests.support.processes import WorkerProcess, _database_url
from tests.support.subscriber import Subscriber

# Times a test database flush is tried when PostgreSQL ends it as a deadlock victim.
FLUSH_TRIES = 5


@pytest.fixture(scope="session", autouse=True)
def _flush_survives_a_deadlock_with_the_worker() -> Iterator[None]:
    """A transactional test's flush (one TRUNCATE of every table) is tried again when it was a deadlock's victim.

    The session's worker keeps running while a test ends: a delivery still in
    flight or a beat task reads two tables in one statement (the delivery with
    its subscription), while TRUNCATE locks them one by one in another order.
    PostgreSQL then aborts one of the two; when it picks the flush, nothing was
    changed, and the worker's statement finishes at once: the flush runs again.
    """
    from django.core.management.base import CommandError
    from django.test import TransactionTestCase

    original = TransactionTestCase._fixture_teardown

    def teardown(self: TransactionTestCase) -> None:
        for attempt in range(1, FLUSH_TRIES + 1):
            try:
                return original(self)
            except CommandError as exc:
                # flush names the database; the cause is the driver's error.
                if "deadlock detected" not in str(exc.__cause__) or attempt == FLUSH_TRIES:
                    raise
        return None

    TransactionTestCase._fixture_teardown = teardown
    yield
    TransactionTestCase._fixture_teardown = original


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker) -> Iterator[WorkerProcess]:
    """One real worker (with beat) for the whole session, started once the test database exists."""
    from websubhub.celery import app

    with django_db_blocker.unblock():
        database_url = _database_url()
    # Messages left by an earlier run would otherwise reach this one's worker.
    app.control.purge()
    log_dir = Path(tempfile.mkdtemp(prefix="websubhub-e2e-"))
    worker = WorkerProcess(database_url, log_dir)
    worker.start()
    yield worker
    worker.stop()
    sys.stderr.write(f"\nCelery worker log: {worker.log_path}\n")


@pytest.fixture
def hub(celery_worker: WorkerProcess, transactional_db: None) -> Iterator[WorkerProcess]:
    """A running hub: committed database rows and the worker; shows the worker's log if the test fails."""
    celery_worker.ensure_running()
    yield celery_worker
    # A test that stopped or killed the worker leaves a running one behind.
    celery_worker.ensure_running()


@pytest.fixture
def client(db: None) -> Client:
    """Django's test client, carrying a token that may publish and manage (tests of refusals use their own)."""
    return api_client()


@pytest.fixture
def subscriber() -> Iterator[Subscriber]:
    server = Subscriber()
    yield server
    server.close()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and "hub" in getattr(item, "fixturenames", ()):
        worker = item.funcargs.get("hub")
        if worker is not None:
            report.sections.append(("Celery worker log (tail)", worker.log_tail()))


@pytest.fixture
def no_broker(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict]]:
    """Tasks are recorded instead of sent: (name, send_task keywords) each."""
    from subscriptions.services import queueing
    from websubhub.celery import app as celery_app
    from websubhub.queues import TaskName

    sent: list[tuple[str, dict]] = []
    monkeypatch.setattr(celery_app, "send_task", lambda name, **kw: sent.append((name, kw)))
    # Deliver messages built from a template (a spread's) bypass send_task: recorded alike.
    monkeypatch.setattr(
        queueing.DeliverMessages,
        "publish_many",
        lambda self, delivery_ids, queue: sent.extend(
            (TaskName.DELIVER, {"kwargs": {"delivery_id": delivery_id}, "queue": queue}) for delivery_id in delivery_ids
        ),
    )
    return sent


@pytest.fixture
def fresh_cache() -> None:
    """Throttle counters (the cache) start at zero."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def _forget_remembered_tokens() -> None:
    """Each test starts with no API token remembered (rows of earlier tests were rolled back)."""
    from subscriptions.api.authentication import forget_all

    forget_all()
