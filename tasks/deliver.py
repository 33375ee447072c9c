from celery import shared_task
from django.conf import settings

from subscriptions import services


@shared_task(
    name="hub.deliver",
    bind=True,
    autoretry_for=(services.DeliveryFailed,),
    # The n-th retry waits a random time up to BASE * 2**n seconds, at most BACKOFF_MAX.
    retry_backoff=settings.HUB_RETRY_BACKOFF_BASE,
    retry_backoff_max=settings.HUB_RETRY_BACKOFF_MAX,
    retry_jitter=True,
    max_retries=settings.HUB_DELIVERY_MAX_RETRIES,
    rate_limit=settings.HUB_DELIVERY_RATE_LIMIT,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def deliver(self, *, delivery_id: int) -> None:
    """POST one delivery to its callback; retried with backoff until delivered, gone or out of retries."""
    services.delivery_attempt(
        delivery_id=delivery_id,
        attempt=self.request.retries + 1,
        final=self.request.retries >= self.max_retries,
    )
