"""The per-callback rate limit without Redis (the embedded default): a windows file shared by a machine's processes."""

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from subscriptions import ratelimit

CALLBACK = "http://subscriber.example/cb"


@pytest.fixture
def embedded(settings, tmp_path: Path) -> Path:
    settings.REDIS_URL = ""
    settings.VAR_DIR = tmp_path
    return tmp_path


def _admit(rate: str, callback: str = CALLBACK) -> ratelimit.Admission:
    return ratelimit.attempt_admit("d", callback, lease=30, cap=0, rate=ratelimit.parse_rate(rate))


def test_sends_within_the_limit_go_now_and_the_next_gets_a_slot_one_window_later(embedded: Path) -> None:
    # when
    verdicts = [_admit("3/10s").verdict for _ in range(3)]
    over = _admit("3/10s")
    # then
    assert verdicts == [ratelimit.Verdict.ADMITTED] * 3
    assert over.verdict is ratelimit.Verdict.RATE_LIMITED
    assert 9.5 < over.wait <= 10.0


def test_a_backlog_is_spread_over_successive_windows(embedded: Path) -> None:
    # when: 7 sends at once against 2 per 10 s
    waits = [_admit("2/10s").wait for _ in range(7)]
    # then: 2 now, 2 in one window, 2 in two, 1 in three
    assert [round(wait / 10) for wait in waits] == [0, 0, 1, 1, 2, 2, 3]


def test_callbacks_have_windows_of_their_own(embedded: Path) -> None:
    # given
    _admit("1/10s", "http://a.example/")
    # when / then
    assert _admit("1/10s", "http://b.example/").verdict is ratelimit.Verdict.ADMITTED
    assert _admit("1/10s", "http://a.example/").verdict is ratelimit.Verdict.RATE_LIMITED


def test_the_windows_live_in_their_own_file_written_without_sync(embedded: Path) -> None:
    # when
    _admit("5/s")
    # then
    connection = ratelimit._local_connection()
    assert Path(connection.execute("PRAGMA database_list").fetchone()[2]) == embedded / ratelimit.LOCAL_FILE_NAME
    assert connection.execute("PRAGMA synchronous").fetchone()[0] == 0
    assert sqlite3.connect(embedded / ratelimit.LOCAL_FILE_NAME).execute("SELECT count(*) FROM windows").fetchone() == (
        1,
    )


def _reserve_many(path: str, count: int, results) -> None:
    from django.conf import settings

    settings.VAR_DIR = Path(path)
    rate = ratelimit.Rate(limit=10, window=60.0)
    results.put([ratelimit._reserve_local("shared", rate) for _ in range(count)])


def test_processes_of_one_machine_share_the_limit(embedded: Path) -> None:
    # given two processes reserving 15 sends each, at once, against 10 per minute
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    processes = [context.Process(target=_reserve_many, args=(str(embedded), 15, results)) for _ in range(2)]
    for process in processes:
        process.start()
    waits = results.get(timeout=30) + results.get(timeout=30)
    for process in processes:
        process.join(timeout=30)
    # then: 10 of the 30 go now, the other 20 in the next two windows: never more than 10 in any minute
    now = sorted(wait for wait in waits if wait <= ratelimit.SLOT_TOLERANCE)
    assert len(now) == 10
    assert sorted(round(wait / 60) for wait in waits) == [0] * 10 + [1] * 10 + [2] * 10
