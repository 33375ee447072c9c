"""Delivered outcomes written in batches by one thread per worker process (group commit).

A delivered attempt's record (its attempt row and the delivery's new state) was
one statement and one commit in the task's own thread, on a connection borrowed
from the pool a second time after the POST: measured in bench/RESULTS.md, that
was about a quarter of the machine's CPU per delivery under load (the pool
borrow, the statement, PostgreSQL's work for one commit). In a worker process a
delivered outcome is handed to this module instead: one thread takes what the
task threads handed over in the last BATCH_LINGER_SECONDS and writes it in one
transaction (delivering.outcomes_write: one pipelined executemany on
PostgreSQL), and the task ends without waiting.

What that changes: a worker killed with SIGKILL forgets the outcomes handed over
in its last moments (at most BATCH_LINGER_SECONDS plus one write). Those
deliveries stay pending as before their attempt, and the sweep sends them again:
at least once, as for a worker killed during a POST (README, Delivery
guarantees). A warm shutdown writes everything first (`stop`). Failed attempts
(retries, final failures, 410s) are still written by the task itself: their next
step depends on what was written.

Only a worker process turns it on (`enable`, from the worker's start signal in
tasks/deliver.py); elsewhere (the web, a shell, the unit tests that call the
delivering service) `submit` refuses and the caller writes the outcome itself.
"""

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from django.db import InterfaceError, OperationalError, connections

logger = logging.getLogger("subscriptions.services")

# How long the writer gathers outcomes before it writes them (seconds), and at most how many per transaction.
BATCH_LINGER_SECONDS = 0.01
BATCH_MAX = 500
# Outcomes waiting at most: past this (the database down for a while) the tasks write their own again,
# and fail and retry as they did before this writer existed.
QUEUE_LIMIT = 20_000
# Between tries of a batch the database refused as unreachable (seconds), doubling up to the cap.
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 5.0
# A stopping writer gives up on an unreachable database after this long: the sweep sends those deliveries again.
STOP_GIVE_UP_SECONDS = 10.0

# One outcome: (delivery id, the attempt row's fields, the delivery's new fields).
Outcome = tuple[int, dict[str, Any], dict[str, Any]]


class OutcomeWriter:
    """A queue of outcomes and the thread that writes them; one per process (`writer`)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._items: list[Outcome] = []
        self._writing = 0
        self._write: Callable[[list[Outcome]], None] | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stopping = False
        self._exit_hook = False

    def enable(self, write: Callable[[list[Outcome]], None]) -> None:
        """Hand outcomes to a writer thread from now on; `write` records a batch (delivering.outcomes_write)."""
        with self._cond:
            self._write = write
            self._stopping = False
            if not self._exit_hook:
                # A process that ends without the worker's shutdown signal still writes what it holds.
                atexit.register(self.stop)
                self._exit_hook = True

    def submit(self, outcome: Outcome) -> bool:
        """Queue one outcome for the writer thread; False when the caller must write it itself."""
        with self._cond:
            if self._write is None or self._stopping or len(self._items) >= QUEUE_LIMIT:
                return False
            if self._pid != os.getpid() or self._thread is None or not self._thread.is_alive():
                # First use in this process (a prefork child inherits no thread from its parent).
                if self._pid != os.getpid():
                    self._items, self._writing = [], 0
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="hub-outcome-writer", daemon=True)
                self._thread.start()
            self._items.append(outcome)
            if len(self._items) == 1:
                self._cond.notify_all()
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything handed over so far is written (or given up); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._items or self._writing:
                if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                    return not self._items
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def stop(self, timeout: float = STOP_GIVE_UP_SECONDS + 5) -> None:
        """Write what is queued, then end the thread; later outcomes are written by their tasks."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread if self._pid == os.getpid() else None
        if thread is not None:
            thread.join(timeout)
        with self._cond:
            self._write = None
            self._thread = None

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._stopping:
                    self._cond.wait()
                if not self._items:
                    self._cond.notify_all()
                    return
                stopping = self._stopping
            if not stopping:
                time.sleep(BATCH_LINGER_SECONDS)
            with self._cond:
                batch, self._items = self._items[:BATCH_MAX], self._items[BATCH_MAX:]
                self._writing = len(batch)
            try:
                self._batch_write(batch)
            finally:
                with self._cond:
                    self._writing = 0
                    self._cond.notify_all()

    def _batch_write(self, batch: list[Outcome]) -> None:
        write = self._write
        if write is None:
            return
        wait = RETRY_FIRST_SECONDS
        given_up_at = None
        while True:
            try:
                write(batch)
                return
            except (OperationalError, InterfaceError):
                # The database is unreachable (or a deadlock was broken): try the batch again.
                connections["default"].close()
                if self._stopping:
                    given_up_at = given_up_at or time.monotonic() + STOP_GIVE_UP_SECONDS
                    if time.monotonic() >= given_up_at:
                        logger.error(
                            "%s delivered outcomes not recorded (database unreachable at shutdown): "
                            "the sweep sends those deliveries again",
                            len(batch),
                        )
                        return
                logger.warning("recording %s delivered outcomes failed; trying again", len(batch), exc_info=True)
                time.sleep(wait)
                wait = min(wait * 2, RETRY_MAX_SECONDS)
            except Exception:
                # Never happens by design (delivering.outcomes_write records a row it cannot write
                # as a bare attempt): keep the thread alive, and leave those deliveries to the sweep.
                logger.exception("recording %s delivered outcomes broke: the sweep sends them again", len(batch))
                return
            finally:
                # Hand the connection back to the pool between batches, as a task does.
                connections["default"].close()


writer = OutcomeWriter()
