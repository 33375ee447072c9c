"""Retry policies shared by the tasks: one home for how a task survives a database outage."""

from typing import Any

from django.db import InterfaceError, OperationalError


def database_retry(*, longest_wait: int, retries: int) -> dict[str, Any]:
    """Celery autoretry options for a task that only fails when the database is briefly unreachable.

    Restarting, out of connections, or the pool's wait over: retried with
    exponential backoff and full jitter, each wait at most `longest_wait`
    seconds, `retries` times. Only for idempotent tasks.
    """
    return {
        "autoretry_for": (OperationalError, InterfaceError),
        "retry_backoff": True,
        "retry_backoff_max": longest_wait,
        "retry_jitter": True,
        "max_retries": retries,
    }


# Spread and verification: the sweeper would re-send them too, but later.
WORK_DATABASE_RETRY = database_retry(longest_wait=60, retries=10)
# Periodic tasks: well before beat's next run would do the same work.
PERIODIC_DATABASE_RETRY = database_retry(longest_wait=30, retries=5)
