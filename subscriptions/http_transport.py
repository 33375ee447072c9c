"""The transport under the outbound session: connections a request's deadline can cut, tunnelled through
HUB_OUTBOUND_PROXY when it is set.

`deadline(seconds)` watches one request: each socket its connection opens (or
reuses from the pool) is handed to the request's watch, and one watchdog thread
per process shuts down the sockets of a request whose deadline passed, which
wakes a blocked read at once. The pools tunnel plain http through the proxy as
well as https, so an egress proxy sees one kind of request, a CONNECT naming the
destination.
"""

import contextlib
import heapq
import itertools
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any, TypeVar

from urllib3.connection import HTTPConnection
from urllib3.poolmanager import ProxyConfig

from subscriptions import netguard


class TunnelRefused(OSError):
    """HUB_OUTBOUND_PROXY answered the CONNECT with something other than 200 (its policy said no, or it failed)."""


class _Watch:
    """The deadline of one request and the sockets it used (a redirect adds one per hop)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.due = time.monotonic() + seconds
        self.expired = False
        self._done = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        _watchdog().add(self)

    def use(self, connection: Any) -> None:
        """The request is about to use (or has just connected) this connection.

        The socket itself is kept, not the connection: http.client lets go of a
        connection's socket (`sock = None`) while the body of a `Connection:
        close` answer is still being read from it.
        """
        self.use_socket(getattr(connection, "sock", None))

    def use_socket(self, sock: Any) -> None:
        """The request's connection has just opened this socket (a proxy's CONNECT and TLS handshakes follow).

        Each layer a connection adds is handed in as it is made: wrapping a
        socket in TLS moves its descriptor to the new SSLSocket and leaves the
        old object closed. TLS inside a proxy's TLS is urllib3's SSLTransport,
        not a socket: the socket under it is kept.
        """
        if not isinstance(sock, socket.socket):
            sock = getattr(sock, "socket", None)
            if not isinstance(sock, socket.socket):
                return
        with self._lock:
            if self._done:
                return
            if not any(kept is sock for kept in self._sockets):
                self._sockets.append(sock)
            if self.expired:
                _shutdown(sock)

    def expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)

    def finish(self) -> None:
        # Under the lock: once finished, the watchdog never touches a socket
        # that is back in the pool for the next request.
        with self._lock:
            self._done = True
            self._sockets.clear()


def _shutdown(sock: socket.socket) -> None:
    # The plain socket's shutdown, not SSLSocket's (which drops its TLS state
    # under the reading thread): a blocked read returns end-of-stream at once.
    # Never close here: the owning thread may be using the descriptor.
    # OSError: already closed.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One thread per process that expires watches when their deadline passes."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Watch]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self.pid = os.getpid()
        threading.Thread(target=self._run, name="http-deadline-watchdog", daemon=True).start()

    def add(self, watch: _Watch) -> None:
        with self._wake:
            heapq.heappush(self._heap, (watch.due, next(self._order), watch))
            if self._heap[0][2] is watch:
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._wake.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, watch = heapq.heappop(self._heap)
            watch.expire()  # a finished watch ignores it


_watchdog_lock = threading.Lock()
_watchdog_instance: _Watchdog | None = None


def _watchdog() -> _Watchdog:
    """The process's watchdog, started on first use (and again in a forked child, which has no threads)."""
    global _watchdog_instance
    with _watchdog_lock:
        if _watchdog_instance is None or _watchdog_instance.pid != os.getpid():
            _watchdog_instance = _Watchdog()
        return _watchdog_instance


_S = TypeVar("_S")

# The watch of the request this thread is sending, if any (set by deadline()).
_current = threading.local()


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[_Watch]:
    """Watch the request this thread sends within the block: its sockets are shut down `seconds` from now."""
    watch = _Watch(seconds)
    _current.watch = watch
    try:
        yield watch
    finally:
        _current.watch = None
        watch.finish()


def _watch_connection(connection: Any) -> None:
    watch = getattr(_current, "watch", None)
    if watch is not None:
        watch.use(connection)


def _watch_socket(sock: _S) -> _S:
    watch = getattr(_current, "watch", None)
    if watch is not None:
        watch.use_socket(sock)
    return sock


class _DeadlineConnectionMixin:
    """Hands each connection a request uses to that request's watch, new or reused from the pool."""

    _tunnel_host: str | None
    _tunnel_port: int | None

    def _new_conn(self) -> socket.socket:
        return _watch_socket(super()._new_conn())  # type: ignore[misc]

    def _connect_tls_proxy(self, hostname: str, sock: socket.socket) -> ssl.SSLSocket:
        # TLS to an https:// proxy: the destination's own handshake then runs inside it (urllib3's
        # SSLTransport), one read at a time under the connect timeout, and only the deadline bounds it.
        return _watch_socket(super()._connect_tls_proxy(hostname, sock))  # type: ignore[misc]

    def _tunnel(self) -> None:
        # Kept now: a refused tunnel closes the connection, which forgets them.
        destination = f"{self._tunnel_host}:{self._tunnel_port}"
        try:
            super()._tunnel()  # type: ignore[misc]
        except OSError as exc:
            # urllib3 (and http.client) say "Tunnel connection failed: 403 Forbidden".
            if not str(exc).startswith("Tunnel connection failed"):
                raise
            status = str(exc).partition(":")[2].strip()
            raise TunnelRefused(f"HUB_OUTBOUND_PROXY refused to tunnel to {destination} ({status})") from None

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _watch_connection(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch_connection(self)
        super().request(*args, **kwargs)  # type: ignore[misc]


class _DeadlineHTTPConnection(_DeadlineConnectionMixin, netguard.GuardedHTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        if self._tunnel_host is not None and self._tunnel_scheme == "https" and self.proxy_config is not None:
            # A plain-http destination through an https:// proxy: TLS to the proxy, then the CONNECT and the
            # request inside it (urllib3 does this itself only for https destinations).
            context = self.proxy_config.ssl_context or ssl.create_default_context()
            sock = _watch_socket(context.wrap_socket(sock, server_hostname=self.host))
        return sock


class _DeadlineHTTPSConnection(_DeadlineConnectionMixin, netguard.GuardedHTTPSConnection):
    pass


class _DeadlineHTTPConnectionPool(netguard.GuardedHTTPConnectionPool):
    """With a proxy, connects to it and tunnels to the destination, as urllib3's HTTPS pool does.

    urllib3 forwards plain http through a proxy (an absolute-form request line to
    the proxy, whose connection serves every destination); the hub tunnels it like
    https instead, so an egress proxy sees one kind of request, a CONNECT naming the
    destination, and each destination keeps a pool of its own connections.
    """

    ConnectionCls = _DeadlineHTTPConnection

    def _new_conn(self) -> Any:
        if self.proxy is None or self.proxy.host is None:
            return super()._new_conn()
        self.num_connections += 1
        return self.ConnectionCls(
            host=self.proxy.host, port=self.proxy.port, timeout=self.timeout.connect_timeout, **self.conn_kw
        )

    def _prepare_proxy(self, conn: Any) -> None:
        # urllib3 calls this for every new connection when the request line is a path (requests sends one).
        assert self.proxy is not None
        conn.set_tunnel(
            scheme=self.proxy.scheme or "http", host=self._tunnel_host, port=self.port, headers=self.proxy_headers
        )
        conn.connect()


class _DeadlineHTTPSConnectionPool(netguard.GuardedHTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


class DeadlineAdapter(netguard.GuardedAdapter):
    """The guarded adapter whose connections the request deadline can cut, tunnelled through `proxy` if given."""

    def __init__(
        self, *args: Any, proxy: netguard.Proxy | None = None, proxy_tls: ssl.SSLContext | None = None, **kwargs: Any
    ) -> None:
        self.tunnel = proxy
        self.tunnel_tls = proxy_tls
        super().__init__(*args, **kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _DeadlineHTTPConnectionPool,
            "https": _DeadlineHTTPSConnectionPool,
        }
        if self.tunnel is not None:
            # urllib3's own proxy fields, given to every destination's pool: its connections go to the
            # proxy and CONNECT to the destination (requests' `proxies=` would forward plain http instead).
            self.poolmanager.connection_pool_kw.update(
                _proxy=self.tunnel.url,
                _proxy_headers=self.tunnel.header_map,
                _proxy_config=ProxyConfig(self.tunnel_tls, False, None, None),
                # urllib3 turns Nagle's algorithm on for proxied connections; a request's headers and body
                # are separate writes, which would then wait for the peer's delayed ACK.
                socket_options=list(HTTPConnection.default_socket_options),
            )
