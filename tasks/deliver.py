from celery import Task, shared_task
from celery.signals import worker_init, worker_process_shutdown, worker_shutdown

from subscriptions import services
from tasks.retry import WORK_DATABASE_RETRY
from websubhub.hub_settings import hub_settings
from websubhub.queues import QueueName, TaskName


class DeliverTask(Task):
    """The deliver task, whose Celery rate limit is HUB_DELIVERY_RATE_LIMIT as read when a worker asks.

    A worker reads `rate_limit` when it starts consuming (and after `celery control
    rate_limit`, which sets one for that worker): read then, not when this module is
    imported, so the setting's one reader is hub_settings and override_settings reaches it.
    """

    @property  # type: ignore[override]
    def rate_limit(self) -> str | None:
        return self.__dict__.get("_rate_limit_set", hub_settings.HUB_DELIVERY_RATE_LIMIT)

    @rate_limit.setter
    def rate_limit(self, value: str | None) -> None:
        self.__dict__["_rate_limit_set"] = value


@shared_task(
    name=TaskName.DELIVER,
    base=DeliverTask,
    bind=True,
    # Only the database briefly unreachable makes the task itself retry; a failed
    # attempt is an outcome, scheduled by the delivering service.
    **WORK_DATABASE_RETRY,
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


@worker_init.connect
def _outcome_batching_start(**kwargs: object) -> None:
    """A worker records delivered outcomes in batches (services.outcome_batching_start; prefork children inherit it)."""
    services.outcome_batching_start()


@worker_shutdown.connect
@worker_process_shutdown.connect
def _outcome_batching_stop(**kwargs: object) -> None:
    """A warm shutdown records what the batch holds before the process ends."""
    services.outcome_batching_stop()
