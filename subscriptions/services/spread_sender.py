"""Spread messages sent in batches by one thread per web process.

A published notification is stored, committed, and then announced to the
workers with one spread message. Sent by the request's own thread through
`send_task`, that message was about a quarter of the web's CPU per publish
(bench/RESULTS.md: Celery's per-call option lookups, the queue declared each
time, one broker round trip each). In a web process the request hands the
notification id to this module instead: one thread sends what the requests
handed over in the last BATCH_LINGER_SECONDS as messages built from one template
(queueing.TaskMessages), in one pipeline on Redis, and the request answers 202
without waiting for the broker.

What that changes: nothing the publisher can lose. The notification row is the
record; a web process killed with SIGKILL forgets the messages of its last few
milliseconds, and a broker that refuses a batch loses it the same way. Those
notifications stay unspread, and the periodic sweep sends them to spread after
HUB_SWEEP_GRACE_SECONDS, as it always did for a spread message the broker did
not take (README, Delivery guarantees). A graceful stop sends everything first
(`stop`, from gunicorn's worker_exit hook and at exit).

Only a gunicorn worker turns it on (`spread_batching_start`, from gunicorn.conf.py's
post_worker_init); elsewhere (a worker's publish ping, a management command, the
unit tests and Django's test client) the caller sends its own spread message
through `send_task`.
"""

import logging

from subscriptions.batching import BatchThread
from subscriptions.services import queueing
from websubhub.celery import app as celery_app
from websubhub.queues import QueueName, TaskName

logger = logging.getLogger("subscriptions.services")

# How long the thread gathers notification ids before it sends them (seconds), and at most how many per batch.
BATCH_LINGER_SECONDS = 0.005
BATCH_MAX = 500
# Ids waiting at most: past this (a broker that stalls) the requests send their own again, and wait for it.
QUEUE_LIMIT = 10_000


class SpreadSender(BatchThread[int]):
    """The notification ids this process's requests handed over, and the thread that sends their spread."""

    thread_name = "hub-spread-sender"
    linger = BATCH_LINGER_SECONDS
    batch_max = BATCH_MAX
    queue_limit = QUEUE_LIMIT


sender = SpreadSender()


def spread_messages_send(notification_ids: list[int], *, queue: str = QueueName.SPREAD) -> None:
    """Send one spread message per notification id to `queue`, through one producer (one pipeline on Redis).

    A broker that refuses is logged and not retried here: the sweep sends those
    notifications to spread once HUB_SWEEP_GRACE_SECONDS have passed.
    """
    try:
        with celery_app.producer_or_acquire() as producer, producer.batch(max_size=queueing.PUBLISH_BATCH):
            queueing.TaskMessages(producer, TaskName.SPREAD, "notification_id").send_many(notification_ids, queue)
    except Exception:
        logger.exception(
            "%s notifications could not be sent to spread now; the sweep sends them (ids %s to %s)",
            len(notification_ids),
            min(notification_ids),
            max(notification_ids),
        )


def spread_batching_start() -> None:
    """From now on this process's published notifications are sent to spread by its sender thread (a web's start)."""
    sender.enable(spread_messages_send)


def spread_batching_stop() -> None:
    """Send what the sender holds; the requests send their own again (a web process's end)."""
    sender.stop()
