"""Per-callback delivery rate limit, shared by every worker process and machine.

A strict sliding window with reservations: each send reserves a time slot such
that no window of `window` seconds ever holds more than `limit` sends to one
callback. A delivery over the limit gets a slot in the future and is deferred
to it, so waiting never holds a worker, and a backlog for one callback is spread
over successive windows instead of retrying all at once.

With REDIS_URL the slots live in a Redis sorted set per callback, updated by one
Lua script (atomic across machines, Redis's clock). Without Redis (the embedded
default) they live in a database row per callback, updated under a row lock,
which holds the limit for every process on one machine.
"""

import hashlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

# Sends this close to their slot go now rather than being deferred (seconds).
SLOT_TOLERANCE = 0.05

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# The units a rate may name, in the order the API schema's pattern lists them.
UNITS = tuple(_UNIT_SECONDS)
# Spellings of a rate setting that mean "no limit" (compared stripped, in any case):
# the callback rate limit and the abuse throttles read them alike.
OFF_SPELLINGS = ("", "off", "none")


class InvalidRate(ValueError):
    pass


@dataclass(frozen=True)
class Rate:
    limit: int
    window: float  # seconds

    def __str__(self) -> str:
        return f"{self.limit}/{self.window:g}s"


def is_off(text: str | None) -> bool:
    """Whether a rate setting says "no limit"."""
    return (text or "").strip().lower() in OFF_SPELLINGS


def parse_rate(text: str) -> Rate | None:
    """`100/10s`, `5/s`, `1000/1m`, `20/500ms`; "" or "off" means no limit (None). Raises InvalidRate.

    The one reading of a rate: the callback rate limit (setting, API, admin) and
    the abuse throttles (HUB_THROTTLE_*) all parse with it.
    """
    if is_off(text):
        return None
    text = text.strip()
    match = _RATE.match(text)
    if not match:
        raise InvalidRate(
            f'rate limit must look like "100/10s" (count/[number]unit; unit ms, s, m, h, d), not {text!r}'
        )
    count, number, unit = match.groups()
    if unit is None:
        raise InvalidRate(f"rate limit {text!r} needs a unit: ms, s, m, h or d")
    window = float(number or 1) * _UNIT_SECONDS[unit.lower()]
    if int(count) <= 0 or window <= 0:
        raise InvalidRate(f"rate limit {text!r} must allow at least one delivery in a positive window")
    return Rate(int(count), window)


def callback_key(callback: str) -> str:
    return hashlib.sha256(callback.encode("utf-8")).hexdigest()


def reserve(callback: str, rate: Rate) -> float:
    """Reserve the next send to callback; returns how many seconds from now its slot is (0 = send now)."""
    if settings.REDIS_URL:
        return _reserve_redis(callback_key(callback), rate)
    return _reserve_database(callback_key(callback), rate)


# The slot is the later of now and the limit-th most recent reservation plus the
# window; reservations are made in order, so the set never holds more than
# `limit` slots in any window. Times are milliseconds on Redis's clock.
_LUA = """
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local slot = now
if redis.call('ZCARD', key) >= limit then
  local nth = redis.call('ZRANGE', key, -limit, -limit, 'WITHSCORES')
  slot = math.max(now, tonumber(nth[2]) + window)
end
redis.call('ZADD', key, slot, ARGV[3])
redis.call('ZREMRANGEBYRANK', key, 0, -(limit + 1))
redis.call('PEXPIRE', key, slot - now + window + 1000)
return slot - now
"""

_redis_lock = threading.Lock()
_redis_state: dict[str, object] = {}


def _client():
    with _redis_lock:
        if _redis_state.get("url") != settings.REDIS_URL:
            import redis

            _redis_state.clear()
            _redis_state["url"] = settings.REDIS_URL
            _redis_state["client"] = redis.Redis.from_url(
                settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5
            )
        return _redis_state["client"]


def _script(name: str = "reserve", source: str = _LUA):
    client = _client()
    with _redis_lock:
        key = f"script:{name}"
        if key not in _redis_state:
            _redis_state[key] = client.register_script(source)
        return _redis_state[key]


def _reserve_redis(key: str, rate: Rate) -> float:
    wait_ms = _script()(keys=[f"hub:rate:{key}"], args=[rate.limit, int(rate.window * 1000), uuid.uuid4().hex])
    return max(0.0, int(wait_ms) / 1000)


def _reserve_database(key: str, rate: Rate) -> float:
    from subscriptions.models import RateWindow

    with transaction.atomic():
        row, _ = RateWindow.objects.select_for_update().get_or_create(key=key)
        now = time.time()
        slots = [slot for slot in json.loads(row.slots) if slot > now - rate.window]
        slot = now if len(slots) < rate.limit else max(now, slots[-rate.limit] + rate.window)
        slots.append(slot)
        row.slots = json.dumps(slots[-rate.limit :])
        row.save(update_fields=["slots", "updated_at"])
    return max(0.0, slot - now)


# --- Concurrency per callback ------------------------------------------------------
#
# At most `limit` requests in flight to one callback at a time, across every
# worker: a callback that hangs until the timeout can hold only that many
# worker threads, never the whole pool. Each holder takes a lease that ends by
# itself after `lease` seconds, so a worker that dies never leaks a place.

_IN_FLIGHT_LUA = """
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if redis.call('ZCARD', key) < limit then
  redis.call('ZADD', key, now + lease, ARGV[3])
  redis.call('PEXPIRE', key, lease + 1000)
  return -1
end
local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return tonumber(first[2]) - now
"""


def in_flight_acquire(callback: str, limit: int, lease: float) -> tuple[str | None, float]:
    """Take a place among the requests in flight to callback: (token, 0), or (None, seconds until one frees).

    Needs Redis; without it (the embedded default) every request gets a place.
    """
    if limit <= 0 or not settings.REDIS_URL:
        return "", 0.0
    token = uuid.uuid4().hex
    script = _script("in_flight", _IN_FLIGHT_LUA)
    wait_ms = int(script(keys=[f"hub:inflight:{callback_key(callback)}"], args=[limit, int(lease * 1000), token]))
    if wait_ms < 0:
        return token, 0.0
    return None, max(0.001, wait_ms / 1000)


def in_flight_release(callback: str, token: str | None) -> None:
    if token:
        _client().zrem(f"hub:inflight:{callback_key(callback)}", token)


# --- One run per delivery ------------------------------------------------------------
#
# A delivery can have two messages at once (the sweeper or a broker recovery re-sent
# it while the first was still queued or running). Both may be taken by two threads
# at the same moment: the claim lets one of them POST and the other step aside. It
# ends by itself after `lease` seconds, so a worker that dies never keeps it.


def delivery_claim(delivery_id: int, lease: float) -> str | None:
    """Claim the right to run one delivery now: a token, or None when another run holds it.

    Needs Redis; without it (the embedded default, one machine) every run gets "".
    """
    if not settings.REDIS_URL:
        return ""
    token = uuid.uuid4().hex
    taken = _client().set(f"hub:claim:{delivery_id}", token, nx=True, px=int(lease * 1000))
    return token if taken else None


_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def delivery_unclaim(delivery_id: int, token: str | None) -> None:
    """Give a claim back (only one's own: a claim that expired and was taken by another run stays)."""
    if token:
        _script("release", _RELEASE_LUA)(keys=[f"hub:claim:{delivery_id}"], args=[token])
