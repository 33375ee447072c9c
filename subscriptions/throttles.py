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
Under a high limit a process takes a few requests' room at once (a lease, at
most 1 % of the limit, see `lease_size`) and lets that many through without
asking again in the same window: a publisher at 1,000/s costs a round trip per
ten publishes, and room leased but not used only makes the limit stricter,
never looser. Limits under 200 per window are counted request by request.
(DRF's own throttle reads and writes the list of every request time in the
window through the cache: two round trips and a list as long as the limit,
pickled on each request.) Without Redis, DRF's throttle runs on the file cache.
"""

import ipaddress
import math
import threading
import time

from django.conf import settings
from django.http import HttpRequest
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle

from subscriptions import netguard, ratelimit
from websubhub.hub_settings import hub_settings

# The throttles' clock (seconds), its own name so that tests can set it.
clock = time.time

# A process leases at most this share of a window's limit at once, and never more than LEASE_MAX requests.
LEASE_SHARE = 100
LEASE_MAX = 32

_leases_lock = threading.Lock()
# (throttle key, limit, window ms, window number) -> requests leased in that window and not yet used.
_leases: dict[tuple[str, int, int, int], int] = {}


def lease_size(limit: int) -> int:
    """Requests one round trip takes room for: 1 below 200 per window, then 1 % of the limit, at most LEASE_MAX.

    Each process may hold up to this many minus one unused at a window's end,
    counted but not sent: the limit gets that much stricter, never looser.
    """
    return max(1, min(LEASE_MAX, limit // LEASE_SHARE))


def _lease_take(lease: tuple[str, int, int, int]) -> bool:
    """Use one request of a lease this process holds in the current window (False when it holds none)."""
    with _leases_lock:
        left = _leases.get(lease, 0)
        if left <= 0:
            return False
        if left == 1:
            del _leases[lease]
        else:
            _leases[lease] = left - 1
        return True


def _lease_keep(lease: tuple[str, int, int, int], count: int, now_ms: int) -> None:
    """Keep `count` leased requests for later in this window; leases of windows that have ended are dropped."""
    with _leases_lock:
        for old in [old for old in _leases if (old[3] + 1) * old[2] <= now_ms]:
            del _leases[old]
        if count > 0:
            _leases[lease] = _leases.get(lease, 0) + count


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
        now_ms = int(clock() * 1000)
        current = now_ms // window_ms
        size = lease_size(self.num_requests)
        lease = (key, self.num_requests, window_ms, current)
        if size > 1 and _lease_take(lease):
            return True
        keys = [f"hub:throttle:{key}:{current}", f"hub:throttle:{key}:{current - 1}"]
        elapsed_ms = now_ms - current * window_ms
        answer = int(ratelimit.script_run(_THROTTLE_LUA, keys, [self.num_requests, window_ms, elapsed_ms, size]))
        if answer < 0:
            if size > 1:
                _lease_keep(lease, -answer - 1, now_ms)  # this request takes one of them
            return True
        self._wait = answer / 1000
        return False

    def wait(self) -> float | None:
        if not settings.REDIS_URL:
            return super().wait()
        return None if self._wait is None else max(1.0, math.ceil(self._wait))


# KEYS: this window's counter, the previous window's. ARGV: limit, window (ms), ms since this window began,
# and how many requests to take room for (the lease; 1 without ARGV[4]).
# Returns -n (n requests allowed and counted, 1 <= n <= the lease: as many as there is room for) or the
# milliseconds until this window ends (refused, nothing counted).
_THROTTLE_LUA = """
local limit, window, elapsed = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local want = tonumber(ARGV[4] or '1')
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
local room = math.floor(limit - previous * (window - elapsed) / window - current)
if room < 1 then
  return window - elapsed
end
local granted = math.min(want, room)
redis.call('INCRBY', KEYS[1], granted)
redis.call('PEXPIRE', KEYS[1], 2 * window)
return -granted
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
