"""GET /healthz and GET /readyz: liveness without I/O, readiness of the database and the broker, fast either way."""

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from django.db import OperationalError, connection
from django.test import Client
from kombu import Connection

from subscriptions import health
from tests.support.subscriber import wait_until
from websubhub.celery import app as celery_app

# A failing /readyz must still answer well inside a probe's usual timeout (seconds).
ANSWER_BOUND = health.CHECK_TIMEOUT_SECONDS + 0.5


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _timed_get(path: str) -> tuple[object, float]:
    started = time.monotonic()
    response = Client().get(path)
    return response, time.monotonic() - started


def test_healthz_answers_ok_without_touching_the_database() -> None:
    # no db fixture: any database access here would fail the test
    response, elapsed = _timed_get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]
    assert elapsed < 0.5


def test_healthz_refuses_post() -> None:
    assert Client().post("/healthz").status_code == 405


@pytest.mark.django_db
def test_readyz_is_ok_when_the_database_and_the_broker_answer() -> None:
    response, elapsed = _timed_get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}
    assert elapsed < ANSWER_BOUND


@pytest.mark.django_db
def test_readyz_is_503_naming_the_broker_when_the_broker_port_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a broker URL whose port nothing listens on
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    real = health.broker_connection

    def closed_broker() -> Connection:
        connection = real()
        return celery_app.connection_for_read(
            url, connect_timeout=health.BROKER_TIMEOUT_SECONDS, transport_options=connection.transport_options
        )

    monkeypatch.setattr(health, "broker_connection", closed_broker)
    # when
    response, elapsed = _timed_get("/readyz")
    # then
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("failed: ")
    assert "127.0.0.1" not in response.content.decode()  # no addresses or credentials in a public answer
    assert elapsed < ANSWER_BOUND


@pytest.mark.django_db
def test_readyz_is_503_naming_the_database_when_it_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise OperationalError("connection to server failed: password authentication failed for user hub")

    monkeypatch.setitem(health.CHECKS, "database", broken)
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "failed: OperationalError", "broker": "ok"}


@pytest.fixture
def hanging_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """A broker check that blocks until the test releases it, as a blackholed host would."""
    release = threading.Event()
    monkeypatch.setitem(health.CHECKS, "broker", lambda: release.wait(30))
    yield release
    release.set()
    # Let the released check finish, so the next test starts with no check running.
    health._checkers["broker"].running.result(timeout=5)


@pytest.mark.django_db
def test_readyz_gives_up_on_a_hanging_dependency_and_does_not_pile_up_checks(hanging_broker) -> None:
    # when a check hangs
    started = time.monotonic()
    first = health.readiness(timeout=0.3)
    # then it fails at the bound
    assert time.monotonic() - started < 1.0
    assert first == {"database": "ok", "broker": "failed: no answer within 0.3s"}
    # and while it still hangs, the next probe fails at once without starting another
    started = time.monotonic()
    second = health.readiness(timeout=0.3)
    assert second["broker"] == "failed: the previous check has not finished"
    assert time.monotonic() - started < 0.3
    # once it answers, the next probe checks again
    hanging_broker.set()
    health._checkers["broker"].running.result(timeout=5)
    assert health.readiness()["broker"] == "ok"


@pytest.mark.django_db
def test_readyz_leaves_no_database_connection_open() -> None:
    def backends() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
            return cursor.fetchone()[0]

    if connection.vendor != "postgresql":
        pytest.skip("counts server-side connections: PostgreSQL only")
    before = backends()
    for _ in range(5):
        assert Client().get("/readyz").status_code == 200
    # A closed backend leaves pg_stat_activity shortly after; the e2e worker may also hold some.
    wait_until(lambda: backends() <= before, timeout=5, what="the checks' connections to close")


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/healthz/", "/readyz/", "/metrics/"])
def test_health_readiness_and_metrics_answer_with_a_trailing_slash_too(path: str) -> None:
    # Load balancers are configured both ways; the slash form must not be an HTML 404.
    response = Client().get(path)
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"] == Client().get(path.rstrip("/"))["Content-Type"]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/healthz/", "/readyz/", "/metrics/"])
def test_health_paths_with_a_trailing_slash_are_exempt_from_the_https_redirect(path: str, settings) -> None:
    # Probes come over plain HTTP from inside the network, with or without the slash.
    settings.SECURE_SSL_REDIRECT = True
    response = Client().get(path, headers={"Authorization": "Bearer x"})
    assert response.status_code != 301
    assert Client().get("/hub/").status_code == 301
