from celery import shared_task

from subscriptions import services
from subscriptions.services import retention
from tasks.retry import PERIODIC_DATABASE_RETRY
from websubhub.queues import TaskName


@shared_task(name=TaskName.EXPIRE_SUBSCRIPTIONS, ignore_result=True, **PERIODIC_DATABASE_RETRY)
def expire_subscriptions() -> int:
    """Remove subscriptions whose lease has ended, and erase secrets whose rotation overlap ended (run by beat)."""
    services.previous_secrets_erase()
    return services.subscriptions_expire()


@shared_task(name=TaskName.ENQUEUE_DUE, ignore_result=True, **PERIODIC_DATABASE_RETRY)
def enqueue_due() -> int:
    """Send the deliveries that waited in the database for a long retry wait or a pause and came due (run by beat)."""
    return services.deliveries_enqueue_due()


@shared_task(name=TaskName.SWEEP, ignore_result=True, **PERIODIC_DATABASE_RETRY)
def sweep() -> int:
    """Re-send work the broker may have lost: unspread notifications, unverified requests (run by beat)."""
    return services.hub_sweep()


@shared_task(name=TaskName.PURGE, ignore_result=True, **PERIODIC_DATABASE_RETRY)
def purge() -> int:
    """Remove what is past retention, in batches, for at most TASK_TIME_BUDGET seconds (run by beat)."""
    return services.retention_purge(time_budget=retention.TASK_TIME_BUDGET).rows
