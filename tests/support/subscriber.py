"""A real HTTP subscriber (and topic publisher) on 127.0.0.1 for end-to-end tests.

It answers verification GETs (echoing hub.challenge unless told otherwise),
serves topic content on other GETs, and records every request it receives.
With `tls`, it speaks HTTPS (and records the handshakes it refused).
"""

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.loopback import LoopbackServer


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)
    # (address, port) of the hub's end: the same for requests on one kept-alive connection.
    peer: tuple[str, int] = ("", 0)

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Answer:
    """One planned answer to a delivery POST."""

    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body: bytes = b""


@dataclass
class Verification:
    """How the subscriber answers a verification GET: echo the challenge, or not."""

    status: int = 200
    body: str | None = None  # None echoes hub.challenge
    location: str | None = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    tls: ssl.SSLContext | None = None
    tls_failures: list[str]

    def finish_request(self, request: socket.socket, client_address: object) -> None:
        # The handshake in the connection's own thread: a slow or refused one holds up no other.
        if self.tls is not None:
            request = self.tls.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                self.tls_failures.append(getattr(exc, "reason", None) or type(exc).__name__)
                _drain(request)
                return
        super().finish_request(request, client_address)


def _drain(sock: socket.socket) -> None:
    """Read what the client sent until it closes, so that closing sends it no reset.

    Under TLS 1.3 a client sends its request before learning that the server
    refused its certificate: closed with that request unread, the socket would
    send a reset, which can overtake the alert that says why.
    """
    with contextlib.suppress(OSError):
        sock.settimeout(5)
        # The plain socket's recv: the TLS layer has nothing more to give after a failed handshake.
        while socket.socket.recv(sock, 65_536):
            pass


class Subscriber(LoopbackServer):
    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        """With `tls` (a server context), an HTTPS subscriber; its URLs are https://."""
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.verification: dict[str, Verification] = {}
        # Planned answers per path, consumed one per POST (a status or an Answer); then 204.
        self.post_statuses: dict[str, list[int | Answer]] = {}
        self.post_delay: dict[str, float] = {}
        # Answers chosen per POST by its content (a status or an Answer), for paths without planned answers.
        self.post_rule: dict[str, Callable[[Received], int | Answer]] = {}
        self.content: dict[str, tuple[bytes, str]] = {}
        server = _Server(("127.0.0.1", 0), self._handler())
        server.tls = tls
        # OpenSSL's reason for each handshake the server refused (PEER_DID_NOT_RETURN_A_CERTIFICATE...).
        server.tls_failures = self.tls_failures = []
        self._serve(server)

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{'https' if self.server.tls else 'http'}://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    # -- what was received ----------------------------------------------------------

    def requests(self, method: str | None = None, path: str | None = None) -> list[Received]:
        with self.lock:
            items = list(self.received)
        return [r for r in items if (method is None or r.method == method) and (path is None or r.path == path)]

    def verifications(self, path: str | None = None) -> list[Received]:
        return [r for r in self.requests("GET", path) if "hub.mode" in r.query]

    def deliveries(self, path: str | None = None) -> list[Received]:
        return self.requests("POST", path)

    # -- the server -------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        subscriber = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _record(self, body: bytes) -> Received:
                parts = urlsplit(self.path)
                item = Received(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query, keep_blank_values=True),
                    headers=dict(self.headers.items()),
                    body=body,
                    peer=self.client_address[:2],
                )
                with subscriber.lock:
                    subscriber.received.append(item)
                return item

            def _answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                item = self._record(b"")
                if "hub.mode" in item.query:
                    rule = subscriber.verification.get(item.path, Verification())
                    if item.param("hub.mode") == "denied":
                        self._answer(200)
                        return
                    body = (item.param("hub.challenge") or "") if rule.body is None else rule.body
                    headers = {"Location": rule.location} if rule.location else {}
                    self._answer(rule.status, body.encode(), headers)
                    return
                if item.path in subscriber.content:
                    body, content_type = subscriber.content[item.path]
                    self._answer(200, body, {"Content-Type": content_type})
                    return
                self._answer(404, b"not here")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                item = self._record(self.rfile.read(length))
                delay = subscriber.post_delay.get(item.path, 0.0)
                if delay:
                    time.sleep(delay)
                with subscriber.lock:
                    queue = subscriber.post_statuses.get(item.path)
                    rule = subscriber.post_rule.get(item.path)
                    planned = queue.pop(0) if queue else rule(item) if rule else 204
                answer = planned if isinstance(planned, Answer) else Answer(status=planned)
                if answer.delay:
                    time.sleep(answer.delay)
                # OSError: the hub gave up on this request (timeout, or its worker was killed).
                with contextlib.suppress(OSError):
                    self._answer(answer.status, answer.body, answer.headers)

        return Handler


def wait_until(check: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll check() until it returns something truthy (returned), or fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(interval)


def stays(check: Callable[[], Any], *, duration: float, interval: float = 0.05) -> bool:
    """Whether check() stays truthy for the whole duration (for 'nothing happens' assertions)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        if not check():
            return False
        time.sleep(interval)
    return True
