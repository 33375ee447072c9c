"""The outbound HTTP session shared by verification, delivery and topic fetches.

Every outbound request goes through `request()`, which puts a wall-clock
deadline (HUB_HTTP_TOTAL_TIMEOUT) on the whole exchange: connect, status line,
headers and body. The read timeout alone bounds each socket read, so a peer
that drips a byte every few seconds would otherwise hold a worker thread as
long as it likes. One watchdog thread per process shuts down the socket of a
request whose deadline passed, which wakes the blocked read at once.
"""

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any

import requests
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ReadTimeoutError

from subscriptions import netguard
from websubhub.hub_settings import hub_settings

USER_AGENT = "websubhub/1.0 (+https://www.w3.org/TR/websub/)"
# Connections kept alive per callback host; enough for a worker's threads.
POOL_MAXSIZE = 64

_local = threading.local()


class TotalTimeout(requests.Timeout):
    """The request ran past HUB_HTTP_TOTAL_TIMEOUT (however steadily the peer was sending)."""


class ReadError(requests.ConnectionError):
    """The answer's body could not be read (the connection broke, or the encoding was bad)."""


@dataclass(frozen=True)
class Reply:
    """An answer read within the deadline: status, headers and at most `body_limit` bytes of body."""

    status_code: int
    headers: Mapping[str, str]
    body: bytes
    # True when the body was longer than the limit (body holds the first body_limit bytes).
    truncated: bool = False


def session() -> requests.Session:
    """One pooled keep-alive session per process and thread (recreated after a fork)."""
    pid = os.getpid()
    cached = getattr(_local, "session", None)
    if cached is None or _local.pid != pid:
        cached = new_session()
        _local.session, _local.pid = cached, pid
    return cached


def new_session() -> requests.Session:
    """A session whose every request, redirect hops included, passes the outbound address guard."""
    fresh = requests.Session()
    # The guard checks each connection's resolved address unless HUB_ALLOW_PRIVATE_ADDRESSES is on;
    # the deadline adapter lets the watchdog reach each connection's socket.
    adapter = DeadlineAdapter(pool_connections=POOL_MAXSIZE, pool_maxsize=POOL_MAXSIZE, max_retries=0)
    fresh.mount("http://", adapter)
    fresh.mount("https://", adapter)
    fresh.headers["User-Agent"] = USER_AGENT
    # Proxies from the environment would send subscriber traffic elsewhere.
    fresh.trust_env = False
    return fresh


def total_timeout() -> float:
    """Seconds one outbound request may take from start to last byte read."""
    return hub_settings.HUB_HTTP_TOTAL_TIMEOUT


def timeout() -> tuple[float, float]:
    """(connect, read) seconds for every outbound request, neither longer than the total deadline.

    The connect timeout also bounds the whole TLS handshake (CPython's ssl
    module counts it across the handshake's reads), which runs before the
    watchdog can see the connection's socket.
    """
    total = total_timeout()
    return (min(hub_settings.HUB_HTTP_CONNECT_TIMEOUT, total), min(hub_settings.HUB_HTTP_READ_TIMEOUT, total))


def request(method: str, url: str, *, body_limit: int | Callable[[int], int], **kwargs: Any) -> Reply:
    """Send one request and read its answer, all within HUB_HTTP_TOTAL_TIMEOUT.

    `body_limit` is how many bytes of the body to read (or a function of the
    status code giving it); the rest is never read. Raises a requests
    RequestException on any transport failure, TotalTimeout when the deadline
    passed. Other keyword arguments go to `requests.Session.request`.
    """
    watch = _Watch(total_timeout())
    _local.watch = watch
    try:
        response = _send(session(), method, url, **kwargs)
        with response:
            limit = body_limit(response.status_code) if callable(body_limit) else body_limit
            body = _read(response, limit + 1) if limit > 0 else b""
        if watch.expired:
            # A shut-down socket reads as the end of the body: what was read may look whole.
            raise TotalTimeout(f"no answer within HUB_HTTP_TOTAL_TIMEOUT ({watch.seconds:g}s)")
        return Reply(response.status_code, response.headers, body[: max(limit, 0)], len(body) > limit)
    except requests.RequestException as exc:
        if watch.expired and not isinstance(exc, TotalTimeout):
            raise TotalTimeout(f"no answer within HUB_HTTP_TOTAL_TIMEOUT ({watch.seconds:g}s)") from None
        raise
    finally:
        _local.watch = None
        watch.finish()


def _send(
    pooled: requests.Session,
    method: str,
    url: str,
    *,
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    allow_redirects: bool = True,
    **kwargs: Any,
) -> requests.Response:
    """Send one request through the session's adapter, streaming the answer.

    A request that follows no redirects (deliveries, verifications) skips the
    session's per-request machinery (settings merge, cookie jar, hooks,
    redirect resolution): it was the larger part of a delivery's CPU in the
    worker (bench/RESULTS.md). It sends what the session would: the session's
    headers under the request's, the body as given, credentials in the URL as
    Basic auth, the session's TLS verification and client certificate, through
    the same adapter (address guard, deadline). Cookies are never kept.
    """
    if allow_redirects or kwargs:
        return pooled.request(
            method,
            url,
            data=data,
            headers=headers,
            allow_redirects=allow_redirects,
            timeout=timeout(),
            stream=True,
            **kwargs,
        )
    prepared = requests.PreparedRequest()
    prepared.method = method
    prepared.prepare_url(url, None)
    merged = requests.structures.CaseInsensitiveDict(pooled.headers)
    if headers:
        merged.update(headers)
    prepared.headers = merged
    prepared.body = data
    if data is not None:
        merged["Content-Length"] = str(len(data))
    if "@" in (prepared.url.split("/", 3)[2] if prepared.url.count("/") >= 2 else ""):
        prepared.prepare_auth(None, prepared.url)
    prepared.hooks = {"response": []}
    adapter = pooled.get_adapter(prepared.url)
    return adapter.send(
        prepared, stream=True, timeout=timeout(), verify=pooled.verify, cert=pooled.cert, proxies=pooled.proxies
    )


def _read(response: requests.Response, amount: int) -> bytes:
    try:
        return response.raw.read(amount, decode_content=True)
    except ReadTimeoutError:
        raise requests.ReadTimeout("read timeout") from None
    except (Urllib3Error, HTTPException, OSError, ValueError) as exc:
        # urllib3 raises its own errors from raw reads; callers handle requests' kind.
        raise ReadError(f"could not read the answer: {type(exc).__name__}") from None


def describe_error(exc: BaseException) -> str:
    """A short, secret-free description of a transport error for the record."""
    if isinstance(exc, netguard.ForbiddenDestinationError):
        # The guard's message names the host, address and rule, never the path or credentials.
        return f"refused: {exc}"
    if isinstance(exc, TotalTimeout):
        return f"timeout: no answer within HUB_HTTP_TOTAL_TIMEOUT ({total_timeout():g}s)"
    if isinstance(exc, requests.Timeout):
        return f"timeout: {type(exc).__name__}"
    if isinstance(exc, ReadError):
        return str(exc)
    if isinstance(exc, requests.ConnectionError):
        return "connection error: could not connect to the callback"
    return f"{type(exc).__name__}"


# --- The deadline ----------------------------------------------------------------------


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
        sock = getattr(connection, "sock", None)
        if sock is None:
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


def _watch_connection(connection: Any) -> None:
    watch = getattr(_local, "watch", None)
    if watch is not None:
        watch.use(connection)


class _DeadlineConnectionMixin:
    """Hands each connection a request uses to that request's watch, new or reused from the pool."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _watch_connection(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch_connection(self)
        super().request(*args, **kwargs)  # type: ignore[misc]


class _DeadlineHTTPConnection(_DeadlineConnectionMixin, netguard.GuardedHTTPConnection):
    pass


class _DeadlineHTTPSConnection(_DeadlineConnectionMixin, netguard.GuardedHTTPSConnection):
    pass


class _DeadlineHTTPConnectionPool(netguard.GuardedHTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _DeadlineHTTPSConnectionPool(netguard.GuardedHTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


class DeadlineAdapter(netguard.GuardedAdapter):
    """The guarded adapter whose connections the request deadline can cut."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _DeadlineHTTPConnectionPool,
            "https": _DeadlineHTTPSConnectionPool,
        }
