"""A threads-pool worker runs as HUB_WORKER_PROCESSES processes: the first starts, watches and stops the others.

Real `celery -A websubhub worker` processes against the real broker; each test's
worker has its own node name next to the session's worker.
"""

import os
import signal
import time
from pathlib import Path

import pytest

from tests.support.processes import WorkerProcess, _database_url
from tests.support.subscriber import wait_until
from websubhub.celery import app as celery_app

pytestmark = pytest.mark.e2e


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _siblings(first: int) -> list[int]:
    """The sibling workers of the first process (its children running celery, not beat)."""
    return [
        pid
        for pid in _children(first)
        if "--hostname" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    ]


def _answering(name: str) -> set[str]:
    replies = celery_app.control.ping(timeout=1.0)
    return {node for reply in replies for node in reply if node.split("@")[0].startswith(name)}


@pytest.fixture
def worker(hub, tmp_path: Path, transactional_db) -> WorkerProcess:
    name = f"sib-{os.getpid()}-{time.monotonic_ns() % 100000}"
    process = WorkerProcess(_database_url(), tmp_path, name=name, env={"HUB_WORKER_PROCESSES": "2"})
    process.start()
    yield process
    process.stop()


def test_the_worker_command_runs_one_consumer_per_process_with_its_own_node_name(worker: WorkerProcess) -> None:
    wait_until(lambda: len(_answering(worker.name)) == 2, timeout=30, what="two worker nodes answering")
    nodes = _answering(worker.name)
    (host,) = {node.split("@")[1] for node in nodes}
    assert nodes == {f"{worker.name}@{host}", f"{worker.name}-2@{host}"}
    assert len(_siblings(worker.process.pid)) == 1


def test_a_sibling_that_dies_is_started_again(worker: WorkerProcess) -> None:
    (sibling,) = wait_until(lambda: _siblings(worker.process.pid), what="the sibling")
    os.kill(sibling, signal.SIGKILL)
    replacement = wait_until(
        lambda: [pid for pid in _siblings(worker.process.pid) if pid != sibling], timeout=30, what="a new sibling"
    )
    assert len(replacement) == 1
    wait_until(lambda: len(_answering(worker.name)) == 2, timeout=30, what="the new sibling answering")


def test_a_warm_shutdown_of_the_first_stops_its_siblings(worker: WorkerProcess) -> None:
    (sibling,) = wait_until(lambda: _siblings(worker.process.pid), what="the sibling")
    os.kill(worker.process.pid, signal.SIGTERM)
    worker.process.wait(timeout=60)
    wait_until(lambda: not _alive(sibling), timeout=30, what="the sibling stopped")


def _embedded_beat(first: int) -> list[int]:
    """The beat process the first worker forked for --beat (its child without a node name of its own)."""
    return [
        pid
        for pid in _children(first)
        if "--hostname" not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        and _alive(pid)
    ]


def test_a_first_process_killed_outright_takes_its_siblings_and_its_beat_down(worker: WorkerProcess) -> None:
    (sibling,) = wait_until(lambda: _siblings(worker.process.pid), what="the sibling")
    (beat,) = wait_until(lambda: _embedded_beat(worker.process.pid), what="the embedded beat")
    os.kill(worker.process.pid, signal.SIGKILL)
    worker.process.wait(timeout=10)
    # the kernel's parent-death signal (SIGTERM): the sibling finishes what it holds and exits
    wait_until(lambda: not _alive(sibling), timeout=60, what="the orphaned sibling gone")
    # and the beat ends too, rather than go on sending the periodic tasks (a second beat after a restart)
    wait_until(lambda: not _alive(beat), timeout=60, what="the orphaned beat gone")
