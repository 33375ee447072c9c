"""Request bodies sent with Transfer-Encoding: chunked, through a real gunicorn on 127.0.0.1.

Go's and Node's HTTP clients (and `requests` with a generator) stream bodies this way,
with no Content-Length. Django's test client cannot express it, so these tests start the
web process as the Procfile does, against the test database.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests

from subscriptions.models import Notification, SubscriptionRequest
from tests.support.auth import token_for
from tests.support.processes import ROOT, WORKER_ENV, _database_url

# Small enough that a test can exceed it quickly, large enough for the requests below.
MAX_REQUEST_BYTES = 4096
WEB_READY_TIMEOUT = 60


class WebProcess:
    def __init__(self, database_url: str, log_dir: Path) -> None:
        self.log_path = log_dir / "web.log"
        self.port = _closed_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            **WORKER_ENV,
            "DATABASE_URL": database_url,
            "HUB_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
            "HUB_MAX_CONTENT_BYTES": "1024",
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "gunicorn.conf.py",
            "websubhub.wsgi:application",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            "1",
        ]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + WEB_READY_TIMEOUT
        while True:
            try:
                if requests.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                # Not listening yet, or its worker still booting (a first answer can be slow on a busy machine).
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def web(transactional_db: None) -> Iterator[WebProcess]:
    """gunicorn serving the hub against the test database (rows committed so both sides see them)."""
    process = WebProcess(_database_url(), Path(tempfile.mkdtemp(prefix="websubhub-web-")))
    process.start()
    yield process
    process.stop()


def chunks(body: bytes, size: int = 100) -> Iterator[bytes]:
    """A generator body: `requests` sends it with Transfer-Encoding: chunked and no Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_publish_with_a_chunked_json_body_is_read_and_accepted(web: WebProcess) -> None:
    # given
    token = token_for("chunked", publish=True)
    body = json.dumps({"topic": "chunked.test", "content": {"streamed": True}}).encode()
    # when
    response = requests.post(
        f"{web.url}/api/notifications/",
        data=chunks(body, 10),
        headers={"Content-Type": "application/json", "Authorization": f"Token {token}"},
        timeout=10,
    )
    # then
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in response.request.headers
    assert response.status_code == 202, (response.text, web.log_tail())
    notification = Notification.objects.get(pk=response.json()["id"])
    assert (notification.topic, bytes(notification.content)) == ("chunked.test", b'{"streamed":true}')


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_subscribe_on_hub_with_a_chunked_form_body_is_read_and_accepted(web: WebProcess) -> None:
    # given a callback nothing listens on: the request is recorded, its verification fails later
    callback = f"http://127.0.0.1:{_closed_port()}/chunked"
    form = urlencode({"hub.mode": "subscribe", "hub.topic": "chunked.test", "hub.callback": callback}).encode()
    # when
    response = requests.post(
        f"{web.url}/hub",
        data=chunks(form, 7),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    # then
    assert response.status_code == 202, (response.text, web.log_tail())
    request = SubscriptionRequest.objects.get()
    assert (request.topic, request.callback) == ("chunked.test", callback)


@pytest.mark.parametrize("path", ["/api/notifications/", "/hub"])
def test_a_chunked_body_larger_than_the_limit_is_refused_with_413(web: WebProcess, path: str) -> None:
    # given a body one byte over HUB_MAX_REQUEST_BYTES, streamed
    body = b"x" * (MAX_REQUEST_BYTES + 1)
    content_type = "application/json" if path.startswith("/api/") else "application/x-www-form-urlencoded"
    # when
    response = requests.post(
        f"{web.url}{path}", data=chunks(body, 1000), headers={"Content-Type": content_type}, timeout=10
    )
    # then
    assert response.status_code == 413, (response.text, web.log_tail())
    assert "HUB_MAX_REQUEST_BYTES" in response.text
    assert not Notification.objects.exists()
    assert not SubscriptionRequest.objects.exists()


def test_a_chunked_body_exactly_at_the_limit_is_not_refused_for_its_size(web: WebProcess) -> None:
    # given a form of exactly HUB_MAX_REQUEST_BYTES: the topic field pads it
    fields = {"hub.mode": "subscribe", "hub.callback": "http://127.0.0.1:8080/chunked", "hub.topic": ""}
    padding = MAX_REQUEST_BYTES - len(urlencode(fields))
    form = urlencode({**fields, "hub.topic": "a." + "b" * (padding - 2)}).encode()
    assert len(form) == MAX_REQUEST_BYTES
    # when
    response = requests.post(
        f"{web.url}/hub",
        data=chunks(form, 1000),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    # then the topic rules answer, not the size limit
    assert response.status_code == 400, (response.text, web.log_tail())
    assert "hub.topic is longer than" in response.text


def test_a_malformed_chunked_body_is_a_400_not_a_500(web: WebProcess) -> None:
    # given a chunk size that is not hexadecimal, sent on a raw socket (no client library sends this)
    request = (
        b"POST /hub HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhub.m\r\nzz\r\nnot a size\r\n0\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    # then
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 400"), (answer[:500], web.log_tail())
    assert not SubscriptionRequest.objects.exists()
