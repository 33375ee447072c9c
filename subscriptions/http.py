"""The outbound HTTP session shared by verification, delivery and topic fetches.

Every outbound request goes through `request()`, which puts a wall-clock
deadline (HUB_HTTP_TOTAL_TIMEOUT) on the whole exchange: connect, status line,
headers and body. The read timeout alone bounds each socket read, so a peer
that drips a byte every few seconds would otherwise hold a worker thread as
long as it likes; the deadline and the connections it can cut are in
http_transport.py.

The session also carries the hub's outbound identity and route (README,
"Outbound proxy and client certificates"): HUB_OUTBOUND_PROXY, a CONNECT proxy
every connection is tunnelled through, plain http included (http_transport.py);
HUB_CLIENT_CERT and HUB_CLIENT_KEY, the certificate presented on every TLS
connection; and HUB_CA_BUNDLE, the certificates the hub trusts instead of
requests' own bundle (outbound_tls.py).
"""

import os
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any

import requests
import requests.certs
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ReadTimeoutError

from subscriptions import netguard
from subscriptions.http_transport import DeadlineAdapter, TunnelRefused, deadline
from subscriptions.outbound_tls import (  # noqa: F401 (client_certificate_setting, ca_bundle_setting: re-exported)
    ca_bundle,
    ca_bundle_setting,
    client_certificate,
    client_certificate_setting,
    proxy_tls_context,
)
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
    with deadline(total_timeout()) as watch:
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
