"""Sending deliver tasks: one producer connection, in batches, each to the queue its attempt count says; and
releasing parked deliveries into them."""

import logging

from celery.utils import uuid
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from kombu import Producer

from subscriptions.models import Delivery
from websubhub.celery import app as celery_app
from websubhub.queues import QueueName, TaskName

# Every service module logs as "subscriptions.services", the one logger they shared
# before the package was split: log configuration and readers select that name.
logger = logging.getLogger("subscriptions.services")

# Deliveries created and enqueued per transaction while spreading.
SPREAD_BATCH = 500
# Messages the producer buffers before one round trip to the broker (Redis: one pipeline). A spread's
# messages (up to publishing.SPREAD_HOLD) go in one: none is in Redis, so no delivery starts and takes this
# process's CPU from the enqueuing thread, until all are built (10,000 take about 0.25 s; the pipeline's
# buffer is about 1 KB per message).
PUBLISH_BATCH = 10_000


def deliveries_enqueue(
    ids: list[int], *, retries: dict[int, int] | None = None, countdowns: dict[int, float] | None = None
) -> None:
    """Send one deliver task per id through a single producer connection.

    `retries` gives a delivery's attempts so far: one that has attempts goes to
    the retry queue (the database counts them, not the message); `countdowns`
    delays a delivery that is not due yet (seconds).
    """
    retries = retries or {}
    countdowns = countdowns or {}
    # kombu's publish batch sends the messages to Redis in pipelines; other
    # transports publish one by one.
    with celery_app.producer_or_acquire() as producer, producer.batch(max_size=PUBLISH_BATCH):
        messages = DeliverMessages(producer)
        for delivery_id in ids:
            queue = QueueName.DELIVER_RETRY if retries.get(delivery_id) else QueueName.DELIVER
            countdown = countdowns.get(delivery_id)
            if countdown:
                celery_app.send_task(
                    TaskName.DELIVER,
                    kwargs={"delivery_id": delivery_id},
                    producer=producer,
                    queue=queue,
                    countdown=countdown,
                )
            else:
                messages.publish(delivery_id, queue)


def deliveries_release(which: Q) -> int:
    """Move the pending deliveries matching `which` that wait for a later time to now and enqueue them."""
    released = 0
    while True:
        now = timezone.now()
        with transaction.atomic():
            rows = dict(
                Delivery.objects.select_for_update()
                .filter(which, status=Delivery.Status.PENDING, due_at__gt=now)
                .order_by("id")
                .values_list("id", "attempts")[:SPREAD_BATCH]
            )
            if not rows:
                return released
            Delivery.objects.filter(pk__in=list(rows)).update(due_at=now, queued=True, updated_at=now)
            transaction.on_commit(lambda rows=rows: deliveries_enqueue(list(rows), retries=rows))
        released += len(rows)


class TaskMessages:
    """Messages of one task built from one template: what `send_task` would send, without its per-call work.

    A fan-out sends thousands of messages that differ only in the task id and
    one keyword argument (the delivery id; a notification id for spread). Celery
    builds each one from its configuration (a chain of lookups per option) and
    declares its queue each time, which made spreading 10,000 deliveries take
    seconds; here the headers and properties are built once, by Celery
    (`as_task_v2`, protocol 2), and copied with those two fields changed. The
    queue is declared with the first message sent to it.
    """

    def __init__(self, producer: Producer, task_name: str, argument: str) -> None:
        self.producer = producer
        self.argument = argument
        amqp = celery_app.amqp
        self.queues = amqp.queues
        # ignore_result as send_task leaves it when the caller gives none.
        self.template = amqp.as_task_v2(uuid(), task_name, args=(), kwargs={argument: 0}, ignore_result=None)
        self.serializer = celery_app.conf.task_serializer
        self.declared: set[str] = set()

    def send(self, value: int, queue_name: str) -> None:
        headers, properties, (args, _, embed), _ = self.template
        task_id = uuid()
        kwargs = {self.argument: value}
        queue = self.queues[queue_name]
        declare = None
        if queue_name not in self.declared:
            declare = [queue]
            self.declared.add(queue_name)
        self.producer.publish(
            (args, kwargs, embed),
            exchange="",
            routing_key=queue_name,
            serializer=self.serializer,
            delivery_mode=queue.exchange.delivery_mode,
            declare=declare,
            headers={**headers, "id": task_id, "root_id": task_id, "kwargsrepr": repr(kwargs)},
            **{**properties, "correlation_id": task_id},
        )


class DeliverMessages(TaskMessages):
    """Deliver task messages (`deliver(delivery_id=...)`) from one template."""

    def __init__(self, producer: Producer) -> None:
        super().__init__(producer, TaskName.DELIVER, "delivery_id")

    def publish(self, delivery_id: int, queue_name: str) -> None:
        self.send(delivery_id, queue_name)
