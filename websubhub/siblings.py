"""One worker process per core: `celery -A websubhub worker` with the threads pool starts its siblings.

A threads-pool worker is one process, so one core's worth of Python caps it,
however many threads it has; the threads are what keep a callback that hangs
until the timeout from holding up the rest (a prefork pool would need a process
per request in flight). So the worker keeps its threads and runs as
HUB_WORKER_PROCESSES processes (default: the machine's cores), like gunicorn's
workers: the command an operator starts is the first, and it starts the others
with the same arguments, each its own consumer with its own node name
(`-n NAME-2@HOST`, ...), its own threads and its own database pool. Beat runs in
the first only.

The first process watches the others: one that exits is started again (after a
pause when it keeps failing); a warm or cold shutdown of the first (SIGTERM,
SIGQUIT, Ctrl-C) stops them the same way; and if the first is killed outright,
the kernel sends its siblings SIGTERM (Linux's parent-death signal), so they
finish the tasks they hold (acks_late) and exit instead of running on alone.
"""

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from celery import bootsteps
from celery.concurrency.thread import TaskPool as ThreadsPool

logger = logging.getLogger(__name__)

# Set in the environment of a sibling, which never starts siblings of its own.
SIBLING_ENV = "HUB_WORKER_SIBLING"
# A sibling that exits within this many seconds of its start counts as failing to start.
QUICK_EXIT_SECONDS = 10.0
# The pause before starting again a sibling that shut down cleanly (seconds).
CLEAN_EXIT_PAUSE = 3.0
# The longest pause before starting a failing sibling again (seconds).
RESTART_PAUSE_MAX = 30.0
# How long a shutdown waits for the siblings before killing them (seconds): past
# the task time limit, a warm shutdown has finished what it held.
STOP_WAIT_SECONDS = 200.0

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """In the child: get SIGTERM when the process that started it dies (Linux)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def embedded_beat_dies_with_worker() -> None:
    """In the beat process a worker forks for -B: end with the worker, even one killed with SIGKILL.

    Celery's embedded beat is a child process with no tie to the worker's life: a
    worker killed outright left it running, sending the periodic tasks (a second
    beat once the worker was started again).
    """
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the worker died before the tie was made
        os.kill(os.getpid(), signal.SIGTERM)


def sibling_command(argv: list[str], *, hostname: str, number: int) -> list[str]:
    """The first worker's command line for sibling `number`: same options, its own node name, no beat, no pidfile."""
    name, _, host = hostname.partition("@")
    command: list[str] = []
    skip_next = False
    for arg in argv[1:]:
        if skip_next:
            skip_next = False
            continue
        if arg in ("-B", "--beat", "--detach"):
            continue
        if arg in ("-n", "--hostname", "--pidfile", "-s", "--schedule", "--schedule-filename"):
            skip_next = True
            continue
        if arg.startswith(("--hostname=", "--pidfile=", "--schedule=", "--schedule-filename=")):
            continue
        if arg.startswith("-n") and len(arg) > 2 and not arg.startswith("--"):
            continue
        command.append(arg)
    return [sys.executable, "-m", "celery", *command, "--hostname", f"{name}-{number}@{host or 'localhost'}"]


class Siblings(bootsteps.StartStopStep):
    """Starts, watches and stops the worker's sibling processes (see the module's text)."""

    label = "Siblings"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.processes: dict[int, subprocess.Popen] = {}
        self.stopping = threading.Event()
        self.watcher: threading.Thread | None = None

    def include_if(self, parent: Any) -> bool:
        from websubhub.hub_settings import hub_settings

        if os.environ.get(SIBLING_ENV) or hub_settings.HUB_WORKER_PROCESSES <= 1:
            return False
        return isinstance(parent.pool_cls, type) and issubclass(parent.pool_cls, ThreadsPool)

    def start(self, parent: Any) -> None:
        from websubhub.hub_settings import hub_settings

        self.hostname = parent.hostname
        self.argv = list(sys.argv)
        count = hub_settings.HUB_WORKER_PROCESSES
        logger.info("starting %s sibling worker processes (HUB_WORKER_PROCESSES=%s)", count - 1, count)
        for number in range(2, count + 1):
            self.processes[number] = self._spawn(number)
        self.watcher = threading.Thread(target=self._watch, name="worker-siblings", daemon=True)
        self.watcher.start()

    def _spawn(self, number: int) -> subprocess.Popen:
        environment = {**os.environ, SIBLING_ENV: str(number)}
        command = sibling_command(self.argv, hostname=self.hostname, number=number)
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        return subprocess.Popen(command, env=environment, preexec_fn=preexec)  # noqa: S603

    def _watch(self) -> None:
        started = dict.fromkeys(self.processes, time.monotonic())
        failures = dict.fromkeys(self.processes, 0)
        while not self.stopping.wait(1.0):
            for number, process in list(self.processes.items()):
                code = process.poll()
                if code is None:
                    continue
                quick = time.monotonic() - started[number] < QUICK_EXIT_SECONDS
                failures[number] = failures[number] + 1 if quick else 0
                pause = min(RESTART_PAUSE_MAX, 2.0 ** failures[number]) if failures[number] else 0.0
                if code == 0:
                    # A warm shutdown: most often the whole group was told to stop
                    # (systemd, docker stop); give the first process time to see it too.
                    pause = max(pause, CLEAN_EXIT_PAUSE)
                logger.warning("sibling worker %s exited (code %s); starting it again in %.0fs", number, code, pause)
                if self.stopping.wait(pause):
                    return
                self.processes[number] = self._spawn(number)
                started[number] = time.monotonic()

    def stop(self, parent: Any) -> None:
        self._stop_all(signal.SIGTERM)

    def terminate(self, parent: Any) -> None:
        self._stop_all(signal.SIGQUIT)

    def _stop_all(self, how: signal.Signals) -> None:
        """Stop the siblings as the first worker stops: SIGTERM waits for their tasks, SIGQUIT does not."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(how)
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
