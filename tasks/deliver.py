from celery import shared_task
from django.conf import settings

from subscriptions import services
from tasks.retry import WORK_DATABASE_RETRY
from websubhub.queues import QueueName, TaskName


@shared_task(
    name=TaskName.DELIVER,
    bind=True,
    # Only the database briefly unreachable makes the task itself retry; a failed
    # attempt is an outcome, scheduled by the delivering service.
    **WORK_DATABASE_RETRY,
    rate_limit=settings.HUB_DELIVERY_RATE_LIMIT,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def deliver(self, *, delivery_id: int, reserved: bool = False) -> None:
    """POST one delivery to its callback, and send it again when the service says so.

    The database counts the attempts and the delivering service computes the
    next wait from that count (services.retry_delay): this task only carries a
    short wait out as a countdown. A long one waits in the database, and
    hub.enqueue_due sends the delivery when it comes due.
    """
    resend = services.delivery_attempt(delivery_id=delivery_id, reserved=reserved)
    if resend is None:
        return
    self.apply_async(
        kwargs={"delivery_id": delivery_id, "reserved": resend.reserved},
        countdown=resend.countdown or None,
        queue=QueueName.DELIVER_RETRY if resend.attempted else QueueName.DELIVER,
    )
