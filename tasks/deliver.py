from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from subscriptions import services
from websubhub.celery import app as celery_app
from websubhub.queues import QueueName, TaskName


@shared_task(
    name=TaskName.DELIVER,
    bind=True,
    # A failed attempt, or the database briefly unreachable: both retried with backoff.
    autoretry_for=(services.DeliveryFailed, OperationalError, InterfaceError),
    # Retry k waits a random time up to BASE * 2**(k-1) seconds, at most BACKOFF_MAX.
    retry_backoff=settings.HUB_RETRY_BACKOFF_BASE,
    retry_backoff_max=settings.HUB_RETRY_BACKOFF_MAX,
    retry_jitter=True,
    max_retries=settings.HUB_DELIVERY_MAX_RETRIES,
    # Retries wait on their own queue, behind no first attempt.
    retry_kwargs={"queue": QueueName.DELIVER_RETRY},
    rate_limit=settings.HUB_DELIVERY_RATE_LIMIT,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def deliver(self, *, delivery_id: int, reserved: bool = False) -> None:
    """POST one delivery to its callback; retried with backoff until delivered, gone or out of retries.

    The database row counts the attempts; a run deferred by the rate limit is
    sent again with the same retry count, so waiting costs no attempt.
    """
    step = services.delivery_attempt(delivery_id=delivery_id, reserved=reserved)
    if step is None:
        return
    if step.retry:
        # The subscriber asked for a pause (Retry-After): a retry at that time.
        raise self.retry(countdown=step.countdown, queue=QueueName.DELIVER_RETRY)
    # Deferred before any attempt (rate limit or requests in flight): the same attempt later.
    celery_app.send_task(
        TaskName.DELIVER,
        kwargs={"delivery_id": delivery_id, "reserved": step.reserved},
        countdown=step.countdown,
        retries=self.request.retries,
        queue=QueueName.DELIVER_RETRY if self.request.retries else QueueName.DELIVER,
    )
