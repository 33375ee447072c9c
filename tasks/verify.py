from celery import shared_task
from django.db import InterfaceError, OperationalError

from subscriptions import services
from websubhub.queues import TaskName


@shared_task(
    name=TaskName.VERIFY,
    # The database briefly unreachable: retried with backoff like spread, sooner than the sweeper would.
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=10,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def verify(*, request_id: int) -> None:
    """Verify a pending (un)subscribe request with its subscriber and apply it (idempotent: pending only)."""
    services.subscription_verify(request_id=request_id)
