"""Celery task names and queue names, defined once (no Django imports, so settings.py can read it).

These strings are the wire names: queued messages and running workers know the
tasks and queues by them, so a value here never changes without a migration
plan for the messages in flight.
"""


class TaskName:
    VERIFY = "hub.verify"
    SPREAD = "hub.spread"
    FETCH_TOPIC = "hub.fetch_topic"
    DELIVER = "hub.deliver"
    EXPIRE_SUBSCRIPTIONS = "hub.expire_subscriptions"
    SWEEP = "hub.sweep"
    ENQUEUE_DUE = "hub.enqueue_due"
    PURGE = "hub.purge"


class QueueName:
    VERIFY = "hub.verify"
    SPREAD = "hub.spread"
    DELIVER = "hub.deliver"
    # Retries wait on their own queue, so a failing subscriber's retries never
    # stand in front of first attempts to healthy ones.
    DELIVER_RETRY = "hub.deliver.retry"
    PERIODIC = "hub.periodic"


# Every queue the hub declares; a worker started without -Q consumes all of them.
ALL_QUEUES = (
    QueueName.VERIFY,
    QueueName.SPREAD,
    QueueName.DELIVER,
    QueueName.DELIVER_RETRY,
    QueueName.PERIODIC,
)
