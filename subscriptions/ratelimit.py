"""Per-callback delivery rate limit, shared by every worker process and machine.

A strict sliding window with reservations: each send reserves a time slot such
that no window of `window` seconds ever holds more than `limit` sends to one
callback. A delivery over the limit gets a slot in the future and is deferred
to it, so waiting never holds a worker, and a backlog for one callback is spread
over successive windows instead of retrying all at once.

With REDIS_URL the slots live in a Redis sorted set per callback, updated by one
Lua script (atomic across machines, Redis's clock). Without Redis (the embedded
default, one machine) they live in a small SQLite file of their own under
HUB_VAR_DIR (`ratelimit.sqlite3`), updated in one write transaction per send,
which holds the limit for every process on the machine. It is kept apart from
the hub's database: a send's reservation never waits behind the database's
writers (SQLite has one at a time), and the file is written without syncing to
disk (`synchronous=OFF`): a machine crash may forget the current windows, which
costs at most one window of sends over the limit, never a delivery.

Why one module of about 380 lines: the rate's one parser (also read by the
admin, the API, the throttles and hub_settings), the window's two stores and the
in-flight cap are one rule, "may this callback be sent to now", kept behind
two calls (`attempt_admit`, `attempt_give_back`, whose batches in a worker are
GiveBacks); the Lua scripts sit beside the Python that calls them.
"""

import enum
import functools
import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from subscriptions.batching import BatchThread

logger = logging.getLogger(__name__)

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


@functools.lru_cache(maxsize=1024)
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


# The slot is the later of now and the limit-th most recent reservation plus the
# window; reservations are made in order, so the set never holds more than
# `limit` slots in any window. Times are milliseconds on Redis's clock. (The Redis
# version is part of the admission script below.)

_redis_lock = threading.Lock()
# (REDIS_URL, its client), replaced whole: read without the lock on every call.
_redis_current: tuple[str, Any] | None = None


def redis_client():
    """The process's Redis client on REDIS_URL, for the hub's own round trips (rate limit, claim, throttles)."""
    global _redis_current
    current = _redis_current
    url = settings.REDIS_URL
    if current is not None and current[0] == url:
        return current[1]
    with _redis_lock:
        if _redis_current is None or _redis_current[0] != url:
            import redis

            _redis_current = (url, redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5))
        return _redis_current[1]


_thread_redis = threading.local()


def _thread_connection() -> Any:
    """This thread's own connection of the process's Redis client (a new one after a fork or a new client).

    A script's round trip on it skips the client's pool (a lock, a fork check, a
    health check per borrow and per return) and its retry wrapper: together
    more Python than the round trip itself, on every publish and every delivery.
    """
    client = redis_client()
    state = _thread_redis
    if getattr(state, "client", None) is not client or state.pid != os.getpid():
        state.connection = client.connection_pool.make_connection()
        state.client, state.pid = client, os.getpid()
    return state.connection


def script_run(source: str, keys: list[str], args: list[Any]) -> Any:
    """EVALSHA of a script (on REDIS_URL), loading it when the server does not know it (new, restarted or flushed).

    On this thread's own connection (_thread_connection). A connection found
    broken is opened again and the command sent once more: a command that never
    reached the server has not run. A timeout is not retried: the script may
    have run.
    """
    connection = _thread_connection()
    sha = _script_shas.get(source)
    if sha is None:
        sha = _script_shas[source] = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
    for attempt in range(3):
        try:
            connection.send_command("EVALSHA", sha, len(keys), *keys, *args)
            return connection.read_response()
        except NoScriptError:
            connection.send_command("SCRIPT", "LOAD", source)
            connection.read_response()
        except RedisConnectionError:
            connection.disconnect()
            if attempt == 2:
                raise
        except RedisTimeoutError:
            connection.disconnect()
            raise
    raise RuntimeError(f"Redis did not run the script {sha} after loading it twice")


_script_shas: dict[str, str] = {}


# --- Without Redis: a file of windows shared by the processes of one machine ------------

LOCAL_FILE_NAME = "ratelimit.sqlite3"
# A writer that finds the file locked waits up to this long (milliseconds).
LOCAL_BUSY_TIMEOUT_MS = 10_000
# About one reservation in this many also deletes windows idle for a day.
LOCAL_PRUNE_EVERY = 1_000
LOCAL_IDLE_SECONDS = 86_400

_local_state = threading.local()


def _local_connection() -> sqlite3.Connection:
    """This thread's connection to the windows file (new after a fork or a change of HUB_VAR_DIR)."""
    path = str(settings.VAR_DIR / LOCAL_FILE_NAME)
    key = (os.getpid(), path)
    if getattr(_local_state, "key", None) != key:
        connection = sqlite3.connect(path, timeout=LOCAL_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        _journal_wal(connection)
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute(
            "CREATE TABLE IF NOT EXISTS windows (key TEXT PRIMARY KEY, slots TEXT NOT NULL, touched REAL NOT NULL)"
        )
        _local_state.connection, _local_state.key, _local_state.count = connection, key, 0
    return _local_state.connection


def _journal_wal(connection: sqlite3.Connection) -> None:
    """Put the file in WAL mode, waiting out another process doing the same.

    SQLite answers "database is locked" at once, without its busy timeout, to a
    change of journal mode while another connection holds the file (two processes
    opening a new file together): tried again until LOCAL_BUSY_TIMEOUT_MS.
    """
    deadline = time.monotonic() + LOCAL_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _reserve_local(key: str, rate: Rate) -> float:
    """Reserve the callback's next slot in the machine's windows file; returns seconds until it."""
    connection = _local_connection()
    _local_state.count += 1
    connection.execute("BEGIN IMMEDIATE")
    try:
        now = time.time()
        row = connection.execute("SELECT slots FROM windows WHERE key = ?", (key,)).fetchone()
        slots = [slot for slot in json.loads(row[0]) if slot > now - rate.window] if row else []
        slot = now if len(slots) < rate.limit else max(now, slots[-rate.limit] + rate.window)
        slots.append(slot)
        connection.execute(
            "INSERT OR REPLACE INTO windows (key, slots, touched) VALUES (?, ?, ?)",
            (key, json.dumps(slots[-rate.limit :]), now),
        )
        if _local_state.count % LOCAL_PRUNE_EVERY == 0:
            connection.execute("DELETE FROM windows WHERE touched < ?", (now - LOCAL_IDLE_SECONDS,))
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return max(0.0, slot - now)


# --- One round trip per attempt -----------------------------------------------------
#
# Before a delivery's POST three things are checked, all in the one Lua script
# below (one Redis round trip; another hands them back after the POST):
#
# - One run per delivery. A delivery can have two messages at once (the sweeper
#   or a broker recovery re-sent it while the first was queued or running); both
#   may be taken by two threads at the same moment. The claim lets one of them
#   POST and the other step aside. A claim given back after a settled outcome
#   stays a few seconds as a tombstone, so a run that read the row as pending just
#   before it was settled cannot claim it next and POST it again.
# - At most `cap` requests in flight to one callback, across every worker: a
#   callback that hangs until the timeout holds only that many worker threads,
#   never the pool.
# - The callback's rate limit (the reservation above).
#
# Claims and places are leases that end by themselves after `lease` seconds, so a
# worker that dies never leaks one.

# How long a settled delivery's claim stays (milliseconds); far longer than the
# moment between reading a row and claiming it.
SETTLED_TOMBSTONE_MS = 10_000

_ADMIT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', lease) then return {1, 0} end
local cap = tonumber(ARGV[3])
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= cap then
    local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    redis.call('DEL', KEYS[1])
    return {2, tonumber(first[2]) - now}
  end
end
local limit = tonumber(ARGV[4])
if limit > 0 then
  local window = tonumber(ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window)
  local slot = now
  if redis.call('ZCARD', KEYS[3]) >= limit then
    local nth = redis.call('ZRANGE', KEYS[3], -limit, -limit, 'WITHSCORES')
    slot = math.max(now, tonumber(nth[2]) + window)
  end
  redis.call('ZADD', KEYS[3], slot, ARGV[1])
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(limit + 1))
  redis.call('PEXPIRE', KEYS[3], slot - now + window + 1000)
  if slot - now > tonumber(ARGV[6]) then
    redis.call('DEL', KEYS[1])
    return {3, slot - now}
  end
end
if cap > 0 then
  redis.call('ZADD', KEYS[2], now + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[2], lease + 1000)
end
return {0, 0}
"""

_GIVE_BACK_LUA = """
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if tonumber(ARGV[2]) > 0 then
    redis.call('SET', KEYS[1], 'settled', 'PX', ARGV[2])
  else
    redis.call('DEL', KEYS[1])
  end
end
return 0
"""


class Verdict(enum.Enum):
    ADMITTED = 0
    BUSY = 1  # another run of this delivery holds its claim
    IN_FLIGHT_FULL = 2  # the callback has `cap` requests in flight
    RATE_LIMITED = 3  # a slot was reserved in the future


@dataclass(frozen=True)
class Admission:
    """What the checks before a POST decided; `wait` is seconds until a place frees or the reserved slot comes.

    `open_for` (IN_FLIGHT_FULL): seconds the callback's oldest request in flight
    has been open, worked out from its lease (every place is taken for the same
    lease, HUB_HTTP_TOTAL_TIMEOUT + 5 s).
    """

    verdict: Verdict
    token: str = ""
    wait: float = 0.0
    open_for: float = 0.0


def _keys(delivery: str, callback: str) -> list[str]:
    digest = callback_key(callback)
    return [f"hub:claim:{delivery}", f"hub:inflight:{digest}", f"hub:rate:{digest}"]


def attempt_admit(delivery: str, callback: str, *, lease: float, cap: int, rate: Rate | None) -> Admission:
    """Claim the delivery (by its uuid), take a place among the callback's requests in flight, reserve its slot.

    `rate` None means no limit (or a slot already reserved by an earlier run);
    `cap` 0 means no cap. Only an ADMITTED run holds anything, to give back with
    `attempt_give_back`. Without Redis (the embedded default, one machine) there
    is no claim and no cap, and the rate limit is kept in the machine's windows file.
    """
    if not settings.REDIS_URL:
        wait = _reserve_local(callback_key(callback), rate) if rate else 0.0
        if wait > SLOT_TOLERANCE:
            return Admission(Verdict.RATE_LIMITED, wait=wait)
        return Admission(Verdict.ADMITTED)
    token = uuid.uuid4().hex
    limit, window = (rate.limit, int(rate.window * 1000)) if rate else (0, 0)
    verdict, wait_ms = script_run(
        _ADMIT_LUA,
        _keys(delivery, callback),
        [token, int(lease * 1000), cap, limit, window, int(SLOT_TOLERANCE * 1000)],
    )
    verdict = Verdict(int(verdict))
    if verdict is Verdict.ADMITTED:
        return Admission(verdict, token=token)
    wait = max(0.001, int(wait_ms) / 1000)
    if verdict is Verdict.IN_FLIGHT_FULL:
        return Admission(verdict, wait=wait, open_for=max(0.0, lease - wait))
    return Admission(verdict, wait=wait)


def attempt_give_back(delivery: str, callback: str, admission: Admission, *, settled: bool) -> None:
    """Give back what an admitted run holds; the claim of a `settled` delivery stays a few seconds as a tombstone.

    In a worker the give-back goes out with others, a few milliseconds later (`give_backs`).
    """
    if admission.token:
        keys = _keys(delivery, callback)[:2]
        args = [admission.token, SETTLED_TOMBSTONE_MS if settled else 0]
        if not give_backs.submit((keys, args)):
            script_run(_GIVE_BACK_LUA, keys, args)


# Give-backs gathered this long (seconds) by a worker's sending thread, at most this many per pipeline.
GIVE_BACK_LINGER_SECONDS = 0.005
GIVE_BACK_BATCH_MAX = 500


class GiveBacks(BatchThread[tuple[list[str], list[Any]]]):
    """A worker process's give-backs, (keys, arguments) each, sent by one thread in one pipeline every few ms.

    A give-back frees a callback's place among its requests in flight and ends a
    claim (or starts its tombstone); no task waits on its answer, and this spared
    each delivery a Redis round trip of its own (bench/RESULTS.md). A process
    that dies with some unsent leaves those places and claims to end with their
    lease (HUB_HTTP_TOTAL_TIMEOUT + 5 s), as for a worker killed during a POST; a
    warm shutdown sends them first (`stop`). Only a worker turns it on
    (services.outcome_batching_start), and only with Redis.
    """

    thread_name = "hub-give-backs"
    linger = GIVE_BACK_LINGER_SECONDS
    batch_max = GIVE_BACK_BATCH_MAX

    def enable(self) -> None:  # type: ignore[override]
        if settings.REDIS_URL:
            super().enable(self._send)

    @staticmethod
    def _send(batch: list[tuple[list[str], list[Any]]]) -> None:
        sha = _script_shas.get(_GIVE_BACK_LUA)
        if sha is None:
            digest = hashlib.sha1(_GIVE_BACK_LUA.encode(), usedforsecurity=False)
            sha = _script_shas[_GIVE_BACK_LUA] = digest.hexdigest()
        try:
            pipe = redis_client().pipeline(transaction=False)
            for keys, args in batch:
                pipe.evalsha(sha, len(keys), *keys, *args)
            results = pipe.execute(raise_on_error=False)
            unknown = [item for item, result in zip(batch, results, strict=True) if isinstance(result, NoScriptError)]
            for keys, args in unknown:  # the server lost its scripts (restarted or flushed): load it, send again
                script_run(_GIVE_BACK_LUA, keys, args)
        except Exception:  # Redis unreachable: the leases end these places and claims
            logger.warning("%s give-backs not sent; their leases end them", len(batch), exc_info=True)


give_backs = GiveBacks()
