"""The outbound HTTP session shared by verification, delivery and topic fetches.

Every outbound request goes through `request()`, which puts a wall-clock
deadline (HUB_HTTP_TOTAL_TIMEOUT) on the whole exchange: connect, status line,
headers and body. The read timeout alone bounds each socket read, so a peer
that drips a byte every few seconds would otherwise hold a worker thread as
long as it likes. One watchdog thread per process shuts down the socket of a
request whose deadline passed, which wakes the blocked read at once.

The session also carries the hub's outbound identity and route (README,
"Outbound proxy and client certificates"): HUB_OUTBOUND_PROXY, a CONNECT proxy
every connection is tunnelled through, plain http included; HUB_CLIENT_CERT and
HUB_CLIENT_KEY, the certificate presented on every TLS connection; and
HUB_CA_BUNDLE, the certificates the hub trusts instead of requests' own bundle.
"""

import contextlib
import functools
import heapq
import itertools
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any, TypeVar

import requests
import requests.certs
from django.core.exceptions import ImproperlyConfigured
from urllib3.connection import HTTPConnection
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ReadTimeoutError
from urllib3.poolmanager import ProxyConfig

from subscriptions import netguard
from websubhub.hub_settings import hub_settings

USER_AGENT = "websubhub/1.0 (+https://www.w3.org/TR/websub/)"
# Connections kept alive per callback host; enough for a worker's threads.
POOL_MAXSIZE = 64

# The settings a session is built from: a change (a test's override) gives each thread a new session.
OUTBOUND_SETTINGS = ("HUB_OUTBOUND_PROXY", "HUB_CLIENT_CERT", "HUB_CLIENT_KEY", "HUB_CA_BUNDLE")

_local = threading.local()


class TotalTimeout(requests.Timeout):
    """The request ran past HUB_HTTP_TOTAL_TIMEOUT (however steadily the peer was sending)."""


class ReadError(requests.ConnectionError):
    """The answer's body could not be read (the connection broke, or the encoding was bad)."""


class TunnelRefused(OSError):
    """HUB_OUTBOUND_PROXY answered the CONNECT with something other than 200 (its policy said no, or it failed)."""


@dataclass(frozen=True)
class Reply:
    """An answer read within the deadline: status, headers and at most `body_limit` bytes of body."""

    status_code: int
    headers: Mapping[str, str]
    body: bytes
    # True when the body was longer than the limit (body holds the first body_limit bytes).
    truncated: bool = False


def session() -> requests.Session:
    """One pooled keep-alive session per process and thread (new after a fork, or when OUTBOUND_SETTINGS change)."""
    pid = os.getpid()
    key = tuple(getattr(hub_settings, name) for name in OUTBOUND_SETTINGS)
    cached = getattr(_local, "session", None)
    if cached is None or _local.pid != pid or _local.key != key:
        if cached is not None and _local.pid == pid:
            cached.close()
        cached = new_session()
        _local.session, _local.pid, _local.key = cached, pid, key
    return cached


def new_session() -> requests.Session:
    """A session whose every request, redirect hops included, passes the outbound address guard."""
    fresh = requests.Session()
    # The guard checks each connection's resolved address unless HUB_ALLOW_PRIVATE_ADDRESSES is on;
    # the deadline adapter lets the watchdog reach each connection's socket, and tunnels them all
    # through HUB_OUTBOUND_PROXY when it is set.
    adapter = DeadlineAdapter(
        proxy=netguard.outbound_proxy(),
        proxy_tls=proxy_tls_context(),
        pool_connections=POOL_MAXSIZE,
        pool_maxsize=POOL_MAXSIZE,
        max_retries=0,
    )
    fresh.mount("http://", adapter)
    fresh.mount("https://", adapter)
    fresh.headers["User-Agent"] = USER_AGENT
    # Proxies and CA bundles from the environment would send subscriber traffic elsewhere, or trust
    # what the operator did not say: HUB_OUTBOUND_PROXY and HUB_CA_BUNDLE are the hub's own.
    fresh.trust_env = False
    fresh.cert = client_certificate()
    fresh.verify = ca_bundle() or True
    return fresh


# --- TLS identity and trust -------------------------------------------------------------


class _EncryptedKey(Exception):
    pass


def _no_passphrase() -> bytes:
    # Without a callback, OpenSSL would ask for an encrypted key's passphrase on the terminal.
    raise _EncryptedKey


@functools.lru_cache(maxsize=4)
def client_certificate_setting(cert: str, key: str) -> str | tuple[str, str] | None:
    """HUB_CLIENT_CERT and HUB_CLIENT_KEY checked, as requests takes them (`cert=`); ImproperlyConfigured naming them.

    Both are paths to PEM files; HUB_CLIENT_KEY may be left empty when
    HUB_CLIENT_CERT holds the private key after the certificate. The pair must
    load (and match) now, so that a mistake stops the process at start rather
    than failing every delivery.
    """
    cert, key = cert.strip(), key.strip()
    if not cert:
        if key:
            raise ImproperlyConfigured("HUB_CLIENT_KEY is set but HUB_CLIENT_CERT is not: set both")
        return None
    for name, path in (("HUB_CLIENT_CERT", cert), ("HUB_CLIENT_KEY", key)):
        if path and not Path(path).is_file():
            raise ImproperlyConfigured(f"{name}: no such file: {path}")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key or None, password=_no_passphrase)
    except _EncryptedKey:
        raise ImproperlyConfigured(
            f"{'HUB_CLIENT_KEY' if key else 'HUB_CLIENT_CERT'}: the private key is encrypted; the hub needs it "
            "unencrypted (`openssl pkey -in encrypted.pem -out key.pem`), in a file only the hub's user can read"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ImproperlyConfigured("HUB_CLIENT_KEY is not the key of HUB_CLIENT_CERT's certificate") from None
        if not key:
            raise ImproperlyConfigured(
                "HUB_CLIENT_CERT must hold a PEM certificate followed by its private key when HUB_CLIENT_KEY is "
                f"unset ({exc.reason or exc})"
            ) from None
        raise ImproperlyConfigured(
            f"HUB_CLIENT_CERT and HUB_CLIENT_KEY must be a PEM certificate and its private key ({exc.reason or exc})"
        ) from None
    except OSError as exc:
        raise ImproperlyConfigured(f"HUB_CLIENT_CERT or HUB_CLIENT_KEY cannot be read: {exc.strerror}") from None
    return (cert, key) if key else cert


@functools.lru_cache(maxsize=4)
def ca_bundle_setting(path: str) -> str:
    """HUB_CA_BUNDLE checked: a PEM file of CA certificates, or '' for requests' own bundle; ImproperlyConfigured."""
    path = path.strip()
    if not path:
        return ""
    if not Path(path).is_file():
        raise ImproperlyConfigured(f"HUB_CA_BUNDLE: no such file: {path}")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError) as exc:
        raise ImproperlyConfigured(f"HUB_CA_BUNDLE: {path} holds no readable PEM certificate ({exc})") from None
    return path


def client_certificate() -> str | tuple[str, str] | None:
    """What the hub presents on every outbound TLS connection (HUB_CLIENT_CERT, HUB_CLIENT_KEY), or None."""
    return client_certificate_setting(hub_settings.HUB_CLIENT_CERT, hub_settings.HUB_CLIENT_KEY)


def ca_bundle() -> str:
    """HUB_CA_BUNDLE, or '' when the hub trusts requests' own bundle (certifi)."""
    return ca_bundle_setting(hub_settings.HUB_CA_BUNDLE)


def proxy_tls_context() -> ssl.SSLContext | None:
    """For an https:// HUB_OUTBOUND_PROXY: the TLS to the proxy itself, with the hub's trust and certificate."""
    proxy = netguard.outbound_proxy()
    if proxy is None or proxy.url.scheme != "https":
        return None
    context = ssl.create_default_context(cafile=ca_bundle() or requests.certs.where())
    cert = client_certificate()
    if cert is not None:
        # An egress proxy may tell its clients apart by their certificates (Smokescreen does).
        context.load_cert_chain(*((cert,) if isinstance(cert, str) else cert))
    return context


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
    refused = netguard.cause_of(exc, TunnelRefused)
    if refused is not None:
        return f"proxy error: {refused}"
    if isinstance(exc, requests.exceptions.ProxyError):
        return "proxy error: could not connect to HUB_OUTBOUND_PROXY"
    tls = netguard.cause_of(exc, ssl.SSLError)
    if tls is not None:
        # OpenSSL's reason: CERTIFICATE_VERIFY_FAILED, TLSV13_ALERT_CERTIFICATE_REQUIRED (no client certificate)...
        return f"tls error: {tls.reason or type(tls).__name__}"
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


def _watch_connection(connection: Any) -> None:
    watch = getattr(_local, "watch", None)
    if watch is not None:
        watch.use(connection)


def _watch_socket(sock: _S) -> _S:
    watch = getattr(_local, "watch", None)
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
