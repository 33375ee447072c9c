from celery import shared_task
from django.db import InterfaceError, OperationalError

from subscriptions import services
from websubhub.queues import TaskName

# The database briefly unreachable (restarting, out of connections, the pool's
# wait over): retried with backoff like spread, well before beat's next run
# would (each wait at most 30 s).
PERIODIC_RETRY = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": True,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 5,
}


@shared_task(name=TaskName.EXPIRE_SUBSCRIPTIONS, ignore_result=True, **PERIODIC_RETRY)
def expire_subscriptions() -> int:
    """Remove subscriptions whose lease has ended (run by beat)."""
    return services.subscriptions_expire()


@shared_task(name=TaskName.SWEEP, ignore_result=True, **PERIODIC_RETRY)
def sweep() -> int:
    """Re-send work the broker may have lost: unspread notifications, unverified requests (run by beat)."""
    return services.hub_sweep()
