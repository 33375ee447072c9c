from celery import shared_task

from subscriptions import services


@shared_task(name="hub.verify", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def verify(*, request_id: int) -> None:
    """Verify a pending (un)subscribe request with its subscriber and apply it (idempotent: pending only)."""
    services.subscription_verify(request_id=request_id)
