from celery import shared_task

from subscriptions import services
from tasks.retry import WORK_DATABASE_RETRY
from websubhub.queues import TaskName


@shared_task(
    name=TaskName.VERIFY,
    **WORK_DATABASE_RETRY,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def verify(*, request_id: int) -> None:
    """Verify a pending (un)subscribe request with its subscriber and apply it (idempotent: pending only)."""
    services.subscription_verify(request_id=request_id)
