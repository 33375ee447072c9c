"""Health endpoints for load balancers and orchestrators: GET /healthz (alive) and GET /readyz (dependencies).

/healthz does no I/O: it answers while the process can serve a request.
/readyz checks that the database answers `SELECT 1` and that the broker
accepts a connection, both at once, each bounded by CHECK_TIMEOUT_SECONDS, so
a dependency that hangs (a blackholed host) still gets a 503 in time.

Each check runs on a short-lived daemon thread, one at a time per dependency:
while a check hangs, later probes fail at once instead of piling up threads.
The database check opens and closes its own connection, so it also proves the
database accepts new connections.
"""

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from kombu import Connection

from websubhub.celery import app as celery_app

logger = logging.getLogger(__name__)

# Longest wait for one dependency (seconds); probes usually time out at 1-5 s.
CHECK_TIMEOUT_SECONDS = 2.0
# Connect and socket timeouts given to the broker client: under the check's bound.
BROKER_TIMEOUT_SECONDS = 1.5


def broker_connection() -> Connection:
    """A connection to the Celery broker, not yet opened (tests replace this to point elsewhere)."""
    return celery_app.connection_for_read(
        connect_timeout=BROKER_TIMEOUT_SECONDS,
        # Redis: bound the connect and the PING that kombu sends on connecting.
        transport_options={
            "socket_connect_timeout": BROKER_TIMEOUT_SECONDS,
            "socket_timeout": BROKER_TIMEOUT_SECONDS,
        },
    )


def check_database() -> None:
    """Raises unless the default database answers SELECT 1 on a fresh connection."""
    connection = connections["default"]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        # This runs on the checker's thread: leave no connection behind it.
        connection.close()


def check_broker() -> None:
    """Raises unless the broker accepts a connection (one attempt, no retry sleep)."""
    with broker_connection() as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT_SECONDS)


class _Checker:
    """Runs one check on a daemon thread, at most one at a time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.running: Future[None] | None = None

    def start(self) -> Future[None] | str:
        """The running check, or why it could not start (the previous one still hangs)."""
        with self.lock:
            if self.running is not None and not self.running.done():
                return "the previous check has not finished"
            future: Future[None] = Future()
            self.running = future
        # A daemon thread: a check that hangs never delays the process's exit.
        threading.Thread(target=self._run, args=(future,), name=f"readyz-{self.name}", daemon=True).start()
        return future

    def _run(self, future: Future[None]) -> None:
        try:
            # Looked up on each run, so that a test's monkeypatch takes effect.
            CHECKS[self.name]()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting request, which reports it
            future.set_exception(exc)
        else:
            future.set_result(None)


CHECKS: dict[str, Callable[[], None]] = {"database": check_database, "broker": check_broker}
_checkers = {name: _Checker(name) for name in CHECKS}


def readiness(timeout: float = CHECK_TIMEOUT_SECONDS) -> dict[str, str]:
    """Each dependency's state: "ok", or a short reason (no hosts, no credentials)."""
    deadline = time.monotonic() + timeout
    started = {name: checker.start() for name, checker in _checkers.items()}
    results: dict[str, str] = {}
    for name, future in started.items():
        if isinstance(future, str):
            results[name] = f"failed: {future}"
            continue
        try:
            future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            results[name] = f"failed: no answer within {timeout:g}s"
        except Exception as exc:  # noqa: BLE001 - any failure of a dependency means not ready
            logger.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
            results[name] = f"failed: {type(exc).__name__}"
        else:
            results[name] = "ok"
    return results


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and serving requests."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database and the broker answer, else 503 naming the check that failed."""
    checks = readiness()
    ready = all(state == "ok" for state in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)
