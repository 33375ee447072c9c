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

import logging
import time
from collections.abc import Callable
from typing import Any

from django.db import InterfaceError, OperationalError, connections

from subscriptions.batching import BatchThread

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


class OutcomeWriter(BatchThread[Outcome]):
    """The outcomes handed over by this process's tasks, and the thread that records them; one per process."""

    thread_name = "hub-outcome-writer"
    linger = BATCH_LINGER_SECONDS
    batch_max = BATCH_MAX
    queue_limit = QUEUE_LIMIT

    def enable(self, write: Callable[[list[Outcome]], None]) -> None:  # type: ignore[override]
        """Hand outcomes to the writer thread from now on; `write` records a batch (delivering.outcomes_write)."""
        super().enable(lambda batch: self._batch_write(write, batch))

    def stop(self, timeout: float = STOP_GIVE_UP_SECONDS + 5) -> None:
        super().stop(timeout)

    def _batch_write(self, write: Callable[[list[Outcome]], None], batch: list[Outcome]) -> None:
        wait = RETRY_FIRST_SECONDS
        given_up_at = None
        while True:
            try:
                write(batch)
                return
            except (OperationalError, InterfaceError):
                # The database is unreachable (or a deadlock was broken): try the batch again.
                connections["default"].close()
                if self.stopping:
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
                # as a bare attempt): keep the thread, and leave those deliveries to the sweep.
                logger.exception("recording %s delivered outcomes broke: the sweep sends them again", len(batch))
                return
            finally:
                # Hand the connection back to the pool between batches, as a task does.
                connections["default"].close()


writer = OutcomeWriter()
