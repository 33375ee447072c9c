"""Work a process's threads hand over, done in batches by one thread of the process's own.

A worker's task threads hand over what need not hold them up (a delivered
outcome to record, a place in flight to give back); one thread per process takes
what came in the last `linger` seconds and handles it at once, one transaction
or one pipeline instead of one per task. Two kinds use it:
services/outcome_writer.py and ratelimit.GiveBacks. Only a worker turns one on
(`enable`); elsewhere `submit` refuses and the caller does the work itself.

A prefork child inherits no thread from its parent: the first `submit` in a
process starts its thread. `stop` (a worker's shutdown, and the process's exit)
handles what is queued, then lets the callers do their own again.
"""

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class BatchThread(Generic[T]):
    """A queue of items and the one thread per process that hands them, in batches, to `handle`.

    `queue_limit` bounds what waits: past it `submit` refuses.
    """

    thread_name = "hub-batch"
    # Seconds the thread gathers items before it handles them, and at most how many per batch.
    linger = 0.01
    batch_max = 500
    queue_limit: int | None = None

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._items: list[T] = []
        self._busy = 0
        self._handle: Callable[[list[T]], None] | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stopping = False
        self._exit_hook = False

    @property
    def stopping(self) -> bool:
        return self._stopping

    def enable(self, handle: Callable[[list[T]], None]) -> None:
        """Take items from now on; `handle(batch)` does a batch's work (in the batch thread)."""
        with self._cond:
            self._handle = handle
            self._stopping = False
            if not self._exit_hook:
                # A process that ends without the worker's shutdown signal still handles what it holds.
                atexit.register(self.stop)
                self._exit_hook = True

    def submit(self, item: T) -> bool:
        """Queue one item for the batch thread; False when the caller must do the work itself."""
        with self._cond:
            if self._handle is None or self._stopping:
                return False
            if self.queue_limit is not None and len(self._items) >= self.queue_limit:
                return False
            if self._pid != os.getpid() or self._thread is None or not self._thread.is_alive():
                if self._pid != os.getpid():
                    self._items, self._busy = [], 0
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
                self._thread.start()
            self._items.append(item)
            if len(self._items) == 1:
                self._cond.notify_all()
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything handed over so far is handled; False on timeout (or no thread to do it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._items or self._busy:
                if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                    return not self._items
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def stop(self, timeout: float = 15.0) -> None:
        """Handle what is queued, end the thread; from then on the callers do their own work."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread if self._pid == os.getpid() else None
        if thread is not None:
            thread.join(timeout)
        with self._cond:
            self._handle = None
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
                time.sleep(self.linger)
            with self._cond:
                batch, self._items = self._items[: self.batch_max], self._items[self.batch_max :]
                self._busy = len(batch)
                handle = self._handle
            try:
                if handle is not None:
                    handle(batch)
            except Exception:
                # A handler raises only by mistake: keep the thread for the next batch.
                logger.exception("%s: a batch of %s broke", self.thread_name, len(batch))
            finally:
                with self._cond:
                    self._busy = 0
                    self._cond.notify_all()
