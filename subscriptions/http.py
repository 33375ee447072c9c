"""The outbound HTTP session shared by verification, delivery and topic fetches."""

import os
import threading

import requests
from django.conf import settings

from subscriptions import netguard

USER_AGENT = "websubhub/1.0 (+https://www.w3.org/TR/websub/)"
# Connections kept alive per callback host; enough for a worker's threads.
POOL_MAXSIZE = 64

_local = threading.local()


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
    # The guard checks each connection's resolved address unless HUB_ALLOW_PRIVATE_ADDRESSES is on.
    adapter = netguard.GuardedAdapter(pool_connections=POOL_MAXSIZE, pool_maxsize=POOL_MAXSIZE, max_retries=0)
    fresh.mount("http://", adapter)
    fresh.mount("https://", adapter)
    fresh.headers["User-Agent"] = USER_AGENT
    # Proxies from the environment would send subscriber traffic elsewhere.
    fresh.trust_env = False
    return fresh


def timeout() -> tuple[float, float]:
    """(connect, read) seconds for every outbound request."""
    return (settings.HUB_HTTP_CONNECT_TIMEOUT, settings.HUB_HTTP_READ_TIMEOUT)


def describe_error(exc: BaseException) -> str:
    """A short, secret-free description of a transport error for the record."""
    if isinstance(exc, netguard.ForbiddenDestinationError):
        # The guard's message names the host, address and rule, never the path or credentials.
        return f"refused: {exc}"
    if isinstance(exc, requests.Timeout):
        return f"timeout: {type(exc).__name__}"
    if isinstance(exc, requests.ConnectionError):
        return "connection error: could not connect to the callback"
    return f"{type(exc).__name__}"
