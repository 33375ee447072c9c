"""A real CONNECT proxy on 127.0.0.1 for tests: records every request that reached it, and can refuse.

It behaves as an egress proxy such as Smokescreen does for the hub: it answers
only CONNECT (any other request, such as an absolute-form GET, gets 405 and is
recorded), resolves the destination's name itself (through `hosts`, so a test
name needs no DNS), and tunnels bytes both ways. It connects only to
127.0.0.1, so no test traffic leaves the machine. With `tls`, clients reach it
over TLS (an https:// proxy).
"""

import contextlib
import select
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tests.support.loopback import LoopbackServer

# Longest request head the proxy reads (a CONNECT line and a few headers).
MAX_HEAD_BYTES = 65_536
# Seconds a tunnel may stay idle before the proxy closes it (test servers answer at once).
IDLE_SECONDS = 30.0


@dataclass(frozen=True)
class ProxyRequest:
    method: str
    target: str  # "host:port" for a CONNECT, as its request line named it
    headers: Mapping[str, str]
    status: int  # what the proxy answered (200: tunnelled)


class ConnectProxy(LoopbackServer):
    def __init__(
        self,
        *,
        hosts: Mapping[str, str] | None = None,
        refuse: Callable[[str], int | None] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """`hosts` maps names to addresses (only 127.0.0.1 is ever connected to); `refuse(target)` gives a status
        to answer instead of tunnelling (None tunnels)."""
        self.requests: list[ProxyRequest] = []
        self.hosts = dict(hosts or {})
        self.refuse = refuse
        self.tls = tls
        self.lock = threading.Lock()
        self._serve(_Server(("127.0.0.1", 0), self._handler()))

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def targets(self, status: int | None = 200) -> list[str]:
        """The CONNECT targets, in order (those answered with `status`; None: all)."""
        with self.lock:
            return [r.target for r in self.requests if r.method == "CONNECT" and status in (None, r.status)]

    def others(self) -> list[ProxyRequest]:
        """Requests that were not CONNECT."""
        with self.lock:
            return [r for r in self.requests if r.method != "CONNECT"]

    def _record(self, request: ProxyRequest) -> None:
        with self.lock:
            self.requests.append(request)

    def _handler(self) -> type[socketserver.BaseRequestHandler]:
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                client: socket.socket = self.request
                if proxy.tls is not None:
                    try:
                        client = proxy.tls.wrap_socket(client, server_side=True)
                    except (ssl.SSLError, OSError):
                        return
                with contextlib.closing(client):
                    self._serve(client)

            def _serve(self, client: socket.socket) -> None:
                head = _read_head(client)
                if head is None:
                    return
                method, target, headers = head
                if method != "CONNECT":
                    proxy._record(ProxyRequest(method, target, headers, 405))
                    _answer(client, 405, "Only CONNECT")
                    return
                status = proxy.refuse(target) if proxy.refuse is not None else None
                host, _, port = target.rpartition(":")
                address = proxy.hosts.get(host.strip("[]"), host.strip("[]"))
                if status is None and (address != "127.0.0.1" or not port.isdigit()):
                    status = 502  # a test proxy reaches nothing but 127.0.0.1
                upstream = None
                if status is None:
                    try:
                        upstream = socket.create_connection((address, int(port)), timeout=5)
                    except OSError:
                        status = 502
                proxy._record(ProxyRequest(method, target, headers, status or 200))
                if upstream is None:
                    _answer(client, status or 502, "Refused by the test proxy")
                    return
                with contextlib.closing(upstream):
                    _answer(client, 200, "Connection established")
                    _relay(client, upstream)

        return Handler


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _read_head(sock: socket.socket) -> tuple[str, str, dict[str, str]] | None:
    """The request line and headers, read a byte at a time so that nothing after them is consumed."""
    data = b""
    while not data.endswith(b"\r\n\r\n"):
        try:
            byte = sock.recv(1)
        except OSError:
            return None
        if not byte or len(data) > MAX_HEAD_BYTES:
            return None
        data += byte
    line, *header_lines = data.decode("latin-1").split("\r\n")
    parts = line.split(" ")
    if len(parts) != 3:
        return None
    headers = {}
    for header in header_lines:
        name, colon, value = header.partition(":")
        if colon:
            headers[name.strip()] = value.strip()
    return parts[0], parts[1], headers


def _answer(sock: socket.socket, status: int, reason: str) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\n\r\n".encode())


def _relay(client: socket.socket, upstream: socket.socket) -> None:
    """Copy bytes both ways until either side closes (one thread: an SSLSocket must not be read and written at once)."""
    peers = {client: upstream, upstream: client}
    while True:
        ready = [sock for sock in peers if isinstance(sock, ssl.SSLSocket) and sock.pending()]
        if not ready:
            ready, _, _ = select.select(list(peers), [], [], IDLE_SECONDS)
            if not ready:
                return
        for sock in ready:
            try:
                data = sock.recv(65_536)
            except ssl.SSLWantReadError:
                continue
            except OSError:
                return
            if not data:
                return
            try:
                peers[sock].sendall(data)
            except OSError:
                return
