"""The Redis-side pieces of the publish path: the throttles' sliding-window counter and the broker channel's client."""

import uuid

import pytest
from django.conf import settings
from kombu import Connection

from subscriptions import ratelimit, throttles
from websubhub import redis_broker

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (REDIS_URL)")


def _hit(key: str, *, limit: int, window_ms: int, elapsed_ms: int) -> int:
    keys = [f"{key}:current", f"{key}:previous"]
    return int(ratelimit.script_run(throttles._THROTTLE_LUA, keys, [limit, window_ms, elapsed_ms]))


def test_a_window_allows_its_limit_then_refuses_until_it_ends() -> None:
    # given
    key = f"test:{uuid.uuid4()}"
    # when
    answers = [_hit(key, limit=3, window_ms=10_000, elapsed_ms=4_000) for _ in range(4)]
    # then: three counted, the fourth refused with the time left in the window
    assert answers == [-1, -1, -1, 6_000]


def test_the_previous_window_counts_by_how_much_of_it_still_overlaps() -> None:
    # given a previous window that used the whole limit of 10
    key = f"test:{uuid.uuid4()}"
    ratelimit.redis_client().set(f"{key}:previous", 10)
    # when / then: at the start of this window all 10 still count; half way through, 5 do
    assert _hit(key, limit=10, window_ms=1_000, elapsed_ms=0) == 1_000
    assert [_hit(key, limit=10, window_ms=1_000, elapsed_ms=500) for _ in range(6)] == [-1] * 5 + [500]


def test_a_refused_request_is_not_counted() -> None:
    # given
    key = f"test:{uuid.uuid4()}"
    _hit(key, limit=1, window_ms=10_000, elapsed_ms=0)
    for _ in range(5):
        _hit(key, limit=1, window_ms=10_000, elapsed_ms=0)
    # then
    assert ratelimit.redis_client().get(f"{key}:current") == b"1"


def test_a_lease_takes_room_for_as_many_requests_as_the_window_has_left() -> None:
    # given
    key = f"test:{uuid.uuid4()}"
    keys = [f"{key}:current", f"{key}:previous"]
    # when leases of 4 are asked for under a limit of 10
    answers = [int(ratelimit.script_run(throttles._THROTTLE_LUA, keys, [10, 10_000, 4_000, 4])) for _ in range(4)]
    # then 4, 4, the 2 left, then a refusal; all 10 counted
    assert answers == [-4, -4, -2, 6_000]
    assert ratelimit.redis_client().get(keys[0]) == b"10"


@pytest.fixture(autouse=True)
def _no_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with a process that holds no lease."""
    monkeypatch.setattr(throttles, "_leases", {})


def _throttle_at(monkeypatch: pytest.MonkeyPatch, settings, rate: str, now: float) -> throttles.PublishByClient:
    settings.HUB_THROTTLE_PUBLISH = rate
    monkeypatch.setattr(throttles, "clock", lambda: now)
    return throttles.PublishByClient(key=f"test-{uuid.uuid4()}")


def _counted(throttle: throttles.PublishByClient, now: float) -> int:
    window_ms = int(throttle.duration * 1000)
    key = f"hub:throttle:{throttle.get_cache_key(None, None)}:{int(now * 1000) // window_ms}"
    return int(ratelimit.redis_client().get(key) or 0)


def test_a_high_limit_is_leased_and_a_low_one_counted_request_by_request(monkeypatch, settings) -> None:
    now = 1_800_000_000.5
    # given a limit of 100,000 a day: leases of 32
    high = _throttle_at(monkeypatch, settings, "100000/d", now)
    # when 40 requests come
    assert all(high.allow_request(None, None) for _ in range(40))
    # then two leases were counted
    assert _counted(high, now) == 64
    # given a limit of 150 a day: no lease
    low = _throttle_at(monkeypatch, settings, "150/d", now)
    assert all(low.allow_request(None, None) for _ in range(5))
    assert _counted(low, now) == 5


def test_processes_holding_leases_never_let_more_than_the_limit_through(monkeypatch, settings) -> None:
    now = 1_800_000_000.5
    # given a limit of 300 a day (leases of 3), and process A holding the 2 left of its lease
    throttle = _throttle_at(monkeypatch, settings, "300/d", now)
    assert throttle.allow_request(None, None)
    a_leases = dict(throttles._leases)
    # when process B (its own leases) sends until it is refused
    monkeypatch.setattr(throttles, "_leases", {})
    b_allowed = 0
    while throttle.allow_request(None, None):
        b_allowed += 1
    # then B got the rest of the limit, less A's lease, and A still has its 2, then is refused
    assert b_allowed == 297
    monkeypatch.setattr(throttles, "_leases", a_leases)
    assert [throttle.allow_request(None, None) for _ in range(3)] == [True, True, False]
    assert _counted(throttle, now) == 300


def test_a_lease_ends_with_its_window(monkeypatch, settings) -> None:
    # given a lease of 3 taken at the end of a window of 10 s (limit 300), one used
    now = 1_800_000_009.9
    throttle = _throttle_at(monkeypatch, settings, "300/10s", now)
    assert throttle.allow_request(None, None)
    # when the next window begins
    later = 1_800_000_010.1
    monkeypatch.setattr(throttles, "clock", lambda: later)
    assert throttle.allow_request(None, None)
    # then that request took a new lease in the new window, and the old one is gone
    assert _counted(throttle, later) == 3
    mine = [lease for lease in throttles._leases if lease[0] == throttle.get_cache_key(None, None)]
    assert [lease[3] for lease in mine] == [int(later * 1000) // 10_000]


def test_the_broker_channel_builds_one_client_while_its_pool_lasts() -> None:
    # given
    with Connection(settings.REDIS_URL) as connection:
        channel = connection.default_channel
        assert isinstance(channel, redis_broker.Channel)
        # when / then
        first = channel._create_client()
        assert channel._create_client() is first
        # a new pool (after a fork or a reconnection) gets a new client on it
        channel._pool = None
        renewed = channel._create_client()
        assert renewed is not first
        assert renewed.connection_pool is channel.pool


def test_messages_go_through_the_broker_channel() -> None:
    # given
    queue = f"test-{uuid.uuid4()}"
    with Connection(settings.REDIS_URL) as connection:
        simple = connection.SimpleQueue(queue)
        try:
            # when
            simple.put({"n": 1})
            message = simple.get(timeout=5)
            # then
            assert message.payload == {"n": 1}
            message.ack()
        finally:
            simple.queue.delete()
            simple.close()


_COUNT_LUA = "return redis.call('INCR', KEYS[1])"


def _thread_connection_id() -> int:
    connection = ratelimit._thread_connection()
    connection.send_command("CLIENT", "ID")
    return int(connection.read_response())


def test_a_script_flushed_from_redis_is_loaded_again_on_the_threads_connection() -> None:
    # given a script this thread has run
    key = f"test:{uuid.uuid4()}"
    assert ratelimit.script_run(_COUNT_LUA, [key], []) == 1
    # when Redis forgets every script (a restart, SCRIPT FLUSH)
    ratelimit.redis_client().script_flush()
    # then the next run loads it and counts once
    assert ratelimit.script_run(_COUNT_LUA, [key], []) == 2
    assert ratelimit.redis_client().get(key) == b"2"


def test_a_connection_the_server_closed_is_opened_again_and_the_script_runs_once() -> None:
    # given this thread's connection, closed by the server
    key = f"test:{uuid.uuid4()}"
    ratelimit.script_run(_COUNT_LUA, [key], [])
    first = _thread_connection_id()
    ratelimit.redis_client().client_kill_filter(_id=first)
    # when a script runs on it
    assert ratelimit.script_run(_COUNT_LUA, [key], []) == 2
    # then it ran once, on a new connection
    assert ratelimit.redis_client().get(key) == b"2"
    assert _thread_connection_id() != first


def test_each_thread_runs_scripts_on_a_connection_of_its_own() -> None:
    import threading

    ids: list[int] = []
    threads = [threading.Thread(target=lambda: ids.append(_thread_connection_id())) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({*ids, _thread_connection_id()}) == 4
