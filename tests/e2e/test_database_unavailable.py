"""A web process whose database refuses connections answers 503 with Retry-After, never 500.

Each case runs the real web server (gunicorn, as the Procfile starts it) against
a database that refuses it: a port where nothing listens (the server is down),
or a role PostgreSQL allows no connection to (as "too many clients" does, but
without filling a server that other processes share).
"""

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urlencode
from urllib.request import Request, urlopen

import psycopg
import pytest
from django.db import connection

from tests.support.processes import free_port
from tests.support.subscriber import wait_until

ROOT = Path(__file__).resolve().parents[2]
MESSAGE = "the database is unavailable; try again later"


def _call(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = Request(url, data=body, headers=headers, method="POST")
    try:
        with urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers.items()), response.read()
    except HTTPError as error:
        return error.code, dict(error.headers.items()), error.read()


def _healthy(port: int) -> bool:
    try:
        with urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def refusing_role(db: None) -> Iterator[str]:
    """A PostgreSQL role with CONNECTION LIMIT 0: every connection it tries is refused at once."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL")
    name = f"hub_refused_{uuid.uuid4().hex[:12]}"
    params = connection.get_connection_params()
    params.pop("pool", None)
    params.pop("cursor_factory", None)
    with psycopg.connect(**params, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {name} LOGIN CONNECTION LIMIT 0")
    try:
        yield name
    finally:
        with psycopg.connect(**params, autocommit=True) as admin:
            admin.execute(f"DROP ROLE IF EXISTS {name}")


def _database_url(case: str, role: str) -> str:
    settings = connection.settings_dict
    if case == "too many connections":
        host, port = settings.get("HOST") or "127.0.0.1", settings.get("PORT") or 5432
        return f"postgres://{role}@{host}:{port}/{settings['NAME']}"
    return f"postgres://postgres@127.0.0.1:{free_port()}/websubhub"  # nothing listens there


@pytest.mark.parametrize(
    ("case", "pool_size"),
    [("server down", "0"), ("server down", "2"), ("too many connections", "2")],
)
def test_web_answers_503_with_retry_after_when_the_database_refuses(
    tmp_path: Path, refusing_role: str, case: str, pool_size: str
) -> None:
    # given the web server, its database refusing every connection
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(case, refusing_role),
        "DATABASE_POOL_MAX_SIZE": pool_size,
        "DATABASE_POOL_TIMEOUT": "1",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "websubhub.wsgi:application"]
    command += ["--bind", f"127.0.0.1:{port}", "--workers", "1", "--no-control-socket"]
    log = tmp_path / "web.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _healthy(port), timeout=30, what="gunicorn")
        base = f"http://127.0.0.1:{port}"
        # when a subscriber subscribes on /hub and a publisher publishes on the API
        form = urlencode(
            {"hub.mode": "subscribe", "hub.topic": "orders", "hub.callback": "http://127.0.0.1:9999/hook"}
        ).encode()
        hub = _call(f"{base}/hub", form, {"Content-Type": "application/x-www-form-urlencoded"})
        api = _call(
            f"{base}/api/notifications/",
            json.dumps({"topic": "orders", "content": {"id": 1}}).encode(),
            {"Content-Type": "application/json", "Authorization": "Token 0123456789abcdef"},
        )
    finally:
        process.terminate()
        process.wait(timeout=20)
    # then both say, in their own format, that the database is unavailable and when to come back
    output = log.read_text(errors="replace")
    status, headers, body = hub
    assert status == 503, (body, output[-3000:])
    assert headers["Content-Type"].startswith("text/plain")
    assert body.decode().strip() == MESSAGE
    assert headers["Retry-After"] == "5"
    status, headers, body = api
    assert status == 503, (body, output[-3000:])
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"detail": MESSAGE, "errors": {"non_field_errors": [MESSAGE]}}
    assert headers["Retry-After"] == "5"
    assert "Internal Server Error" not in output
