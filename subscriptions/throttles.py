"""Abuse throttling: DRF's throttles, counted in Redis when REDIS_URL is set.

Subscribe and unsubscribe requests are limited per client address and per
callback host, so the hub cannot be made to fire verification requests at a
victim; publishing is limited per token (per client address for publish pings
on /hub). Rates are settings read like the callback rate limit (ratelimit.parse_rate:
"30/m", "100/s", "5/10s"); "off" disables one.

With Redis, a throttle is a sliding-window counter: one Lua script per request
(one round trip), two counters per key whatever the rate. The request is allowed
while the current window's count plus the previous window's, weighted by how
much of it still overlaps the last `window` seconds, stays under the limit.
(DRF's own throttle reads and writes the list of every request time in the
window through the cache: two round trips and a list as long as the limit,
pickled on each request.) Without Redis, DRF's throttle runs on the file cache.
"""

import ipaddress
import math
import time

from django.conf import settings
from django.http import HttpRequest
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle

from subscriptions import netguard, ratelimit
from websubhub.hub_settings import hub_settings


class _SettingRateThrottle(SimpleRateThrottle):
    setting = ""

    def get_rate(self) -> str | None:
        rate = getattr(hub_settings, self.setting) or ""
        return None if ratelimit.is_off(rate) else rate

    def parse_rate(self, rate: str | None) -> tuple[int | None, float | None]:
        # DRF's own parser would be a second reading of the same kind of setting.
        parsed = ratelimit.parse_rate(rate or "")
        return (None, None) if parsed is None else (parsed.limit, parsed.window)

    def __init__(self, key: str = "") -> None:
        self._key = key
        super().__init__()

    def get_cache_key(self, request: HttpRequest, view: object) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": self._key or self.get_ident(request)}

    def allow_request(self, request: HttpRequest, view: object) -> bool:
        if not settings.REDIS_URL:
            return super().allow_request(request, view)
        self._wait: float | None = None
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        window_ms = max(1, int(self.duration * 1000))
        now_ms = int(time.time() * 1000)
        current = now_ms // window_ms
        keys = [f"hub:throttle:{key}:{current}", f"hub:throttle:{key}:{current - 1}"]
        elapsed_ms = now_ms - current * window_ms
        wait_ms = ratelimit.script_run(_THROTTLE_LUA, keys, [self.num_requests, window_ms, elapsed_ms])
        if int(wait_ms) < 0:
            return True
        self._wait = int(wait_ms) / 1000
        return False

    def wait(self) -> float | None:
        if not settings.REDIS_URL:
            return super().wait()
        return None if self._wait is None else max(1.0, math.ceil(self._wait))


# KEYS: this window's counter, the previous window's. ARGV: limit, window (ms), ms since this window began.
# Returns -1 (allowed, counted) or the milliseconds until this window ends (refused, not counted).
_THROTTLE_LUA = """
local limit, window, elapsed = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
if previous * (window - elapsed) / window + current + 1 > limit then
  return window - elapsed
end
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], 2 * window)
return -1
"""


class SubscribeByAddress(_SettingRateThrottle):
    scope = "subscribe-address"
    setting = "HUB_THROTTLE_SUBSCRIBE"


class SubscribeByCallbackHost(_SettingRateThrottle):
    scope = "subscribe-callback-host"
    setting = "HUB_THROTTLE_SUBSCRIBE"


class StatusByAddress(_SettingRateThrottle):
    """The subscriber status page, at the subscribe rate, counted apart from subscribe requests."""

    scope = "status-address"
    setting = "HUB_THROTTLE_SUBSCRIBE"


class PublishByClient(_SettingRateThrottle):
    scope = "publish"
    setting = "HUB_THROTTLE_PUBLISH"


class PublishThrottle(PublishByClient):
    """For DRF views: per token (user), else per address."""

    def get_cache_key(self, request: HttpRequest, view: object) -> str | None:
        user = getattr(request, "user", None)
        ident = f"user-{user.pk}" if user is not None and user.is_authenticated else self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


def client_address(request: HttpRequest) -> str:
    """The client's address: the peer's, or X-Forwarded-For's as set by HUB_NUM_PROXIES proxies (DRF's reading)."""
    return BaseThrottle().get_ident(request)


def callback_host(callback: str) -> str:
    """The host the callback's requests really go to, in one spelling per destination ("" when unreadable).

    The outbound guard's reading of the URL (netguard.url_target), so that
    `http://victim\\@other/` counts against victim. An address written in
    another form (`2130706433`, `0x7f.1`, `::ffff:127.0.0.1`) counts as that
    address, and `victim.example.` as `victim.example`.
    """
    try:
        host = netguard.url_target(callback).host
        address = netguard.literal_address(host)
    except netguard.ForbiddenDestination:
        return ""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address) if address is not None else host.rstrip(".")


def wait_if_throttled(request: HttpRequest, throttles: list[SimpleRateThrottle]) -> float | None:
    """Seconds to wait when any throttle refuses the request (None when all allow it).

    Every throttle that allows counts the request, as DRF does.
    """
    waits = [throttle.wait() or 1.0 for throttle in throttles if not throttle.allow_request(request, None)]
    return max(waits) if waits else None


def subscribe_wait(request: HttpRequest, callback: str) -> float | None:
    throttles: list[SimpleRateThrottle] = [SubscribeByAddress()]
    host = callback_host(callback)
    if host:
        throttles.append(SubscribeByCallbackHost(key=host))
    return wait_if_throttled(request, throttles)


def publish_wait(request: HttpRequest) -> float | None:
    return wait_if_throttled(request, [PublishByClient()])


def status_wait(request: HttpRequest) -> float | None:
    return wait_if_throttled(request, [StatusByAddress()])
