"""The per-callback rate limit without Redis (the embedded default): a windows file shared by a machine's processes."""

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from subscriptions import ratelimit

CALLBACK = "http://subscriber.example/cb"
ROOT = Path(__file__).resolve().parents[2]


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


def test_connections_opening_a_new_file_at_once_all_get_it_in_wal_mode(embedded: Path, settings) -> None:
    # SQLite answers "database is locked" at once, without its busy timeout, to one of two connections
    # changing the journal mode together (it would deadlock otherwise): each must try again.
    for attempt in range(20):
        settings.VAR_DIR = embedded / str(attempt)
        settings.VAR_DIR.mkdir()
        start = threading.Barrier(4)
        modes: list[str] = []
        errors: list[BaseException] = []

        def open_file(start: threading.Barrier = start, modes: list = modes, errors: list = errors) -> None:
            start.wait()
            try:
                modes.append(ratelimit._local_connection().execute("PRAGMA journal_mode").fetchone()[0])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_file) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert modes == ["wal"] * 4


# A child process: wait for the start signal, reserve `count` slots of 10 per minute, print the waits.
_CHILD = """
import json, os, sys, time
from pathlib import Path
import django
django.setup()
from subscriptions import ratelimit
go = Path(sys.argv[1]) / "go"
print("ready", flush=True)
deadline = time.monotonic() + 30
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.005)
rate = ratelimit.Rate(limit=10, window=60.0)
print(json.dumps([ratelimit._reserve_local("shared", rate) for _ in range(int(sys.argv[2]))]), flush=True)
"""


def test_processes_of_one_machine_share_the_limit(embedded: Path) -> None:
    # given two processes (not forks of this one: a fork may copy a lock another thread holds)
    env = {**os.environ, "HUB_VAR_DIR": str(embedded), "REDIS_URL": ""}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(embedded), "15"], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    try:
        assert [child.stdout.readline().strip() for child in children] == ["ready", "ready"]
        # when both reserve 15 sends at once against 10 per minute
        (embedded / "go").touch()
        waits = [wait for child in children for wait in json.loads(child.stdout.readline())]
    finally:
        for child in children:
            child.wait(timeout=30)
    # then: 10 of the 30 go now, the other 20 in the next two windows: never more than 10 in any minute
    assert len([wait for wait in waits if wait <= ratelimit.SLOT_TOLERANCE]) == 10
    assert sorted(round(wait / 60) for wait in waits) == [0] * 10 + [1] * 10 + [2] * 10
