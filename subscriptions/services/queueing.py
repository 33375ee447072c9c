"""Sending deliver tasks: one producer connection, in batches, each to the queue its attempt count says; and
releasing parked deliveries into them."""

import base64
import logging
import re
import threading
from collections.abc import Sequence
from typing import Any

from celery.utils import uuid
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from kombu import Producer
from kombu.utils.json import dumps as kombu_dumps

from subscriptions.models import Delivery
from websubhub import embedded_broker, redis_broker
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
        now: dict[str, list[int]] = {}
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
                now.setdefault(queue, []).append(delivery_id)
        messages = DeliverMessages(producer)
        for queue, queued in now.items():
            messages.publish_many(queued, queue)


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
        self.task_name = task_name
        self.argument = argument
        amqp = celery_app.amqp
        self.queues = amqp.queues
        # ignore_result as send_task leaves it when the caller gives none.
        self.template = amqp.as_task_v2(uuid(), task_name, args=(), kwargs={argument: 0}, ignore_result=None)
        self.serializer = celery_app.conf.task_serializer
        self.declared: set[str] = set()

    def send(self, value: int, queue_name: str, *, task_id: str | None = None) -> None:
        headers, properties, (args, _, embed), _ = self.template
        task_id = task_id or uuid()
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

    def send_many(self, values: Sequence[int], queue_name: str) -> None:
        """One message per value to queue_name. On the hub's Redis and embedded brokers each is the envelope
        template of this thread's messages of the task (Envelopes) with its ids put in, all pushed together
        (Redis: one pipeline); elsewhere (RabbitMQ) each goes through kombu."""
        if not values:
            return
        envelopes = Envelopes.of_thread(self, queue_name)
        if envelopes is None:
            for value in values:
                self.send(value, queue_name)
            return
        if queue_name not in self.declared:
            self.producer.maybe_declare(self.queues[queue_name])  # as a first message's publish would
            self.declared.add(queue_name)
        self.producer.channel.envelopes_push(envelopes.key, [envelopes.build(value) for value in values])


# The channels whose messages Envelopes writes: the hub's Redis broker's and its embedded (filesystem) broker's.
# Both are kombu virtual channels: a message is one JSON envelope, pushed to a list or written to a file.
TEMPLATE_CHANNELS = (redis_broker.Channel, embedded_broker.Channel)


class Envelopes:
    """kombu's envelope of one TaskMessages message (Redis, embedded broker), as text with holes for what
    differs per message.

    Each message differs from the others in its task id (three places), its
    value (in the body and in `kwargsrepr`), its body's base64 and its delivery
    tag; everything else is the same text. The template is made by running a
    message with marker values through kombu's whole publish path, captured
    before the push (the channel's envelope_capture), so a new kombu or
    Celery that writes envelopes otherwise changes the template with it.
    """

    # Marker values: none can occur in an envelope by chance.
    _VALUE = 7_391_846_205_573_918_264
    _BODY = "hub-envelope-body-5d0c1e7a"
    # Each thread's templates, by task, argument and queue: made once (a web's sender thread sends a few
    # messages per batch, many batches a second). Per thread, since a message's reply_to is its thread's.
    _of_threads = threading.local()

    def __init__(self, key: str, parts: list[str], fields: list[str], body: tuple[str, str]) -> None:
        self.key = key
        self._parts = parts  # literal text around each field; one more than the fields
        self._fields = fields  # "id", "tag", "value" or "body", in order of appearance
        self._body = body  # the body's JSON text before and after the value

    @classmethod
    def of_thread(cls, messages: "TaskMessages", queue_name: str) -> "Envelopes | None":
        """This thread's template for messages' task, argument and queue (made at its first use); None off the
        hub's Redis and embedded brokers."""
        if not isinstance(messages.producer.channel, TEMPLATE_CHANNELS):
            return None
        templates = cls._of_threads.__dict__.setdefault("templates", {})
        key = (messages.task_name, messages.argument, queue_name)
        if key not in templates:
            templates[key] = cls.capture(messages, queue_name)
        return templates[key]

    @classmethod
    def capture(cls, messages: "TaskMessages", queue_name: str) -> "Envelopes | None":
        """The template of messages' envelopes to queue_name; None off the hub's Redis and embedded brokers (or
        for a queue with an expiry, or a body not in base64), where each message goes through kombu."""
        channel = messages.producer.channel
        if not isinstance(channel, TEMPLATE_CHANNELS) or queue_name in (getattr(channel, "_expires", None) or {}):
            return None
        task_id = uuid()
        with channel.envelope_capture() as captured:
            messages.send(cls._VALUE, queue_name, task_id=task_id)
        if len(captured) != 1:
            return None
        key, message = captured[0]
        properties = message["properties"]
        if properties.get("body_encoding") != "base64":
            return None
        body = base64.b64decode(message["body"]).decode("utf-8").split(str(cls._VALUE))
        if len(body) != 2:
            return None
        text = kombu_dumps({**message, "body": cls._BODY})
        markers = {task_id: "id", properties["delivery_tag"]: "tag", str(cls._VALUE): "value", cls._BODY: "body"}
        pieces = re.split("(" + "|".join(re.escape(marker) for marker in markers) + ")", text)
        return cls(key, pieces[0::2], [markers[marker] for marker in pieces[1::2]], (body[0], body[1]))

    def build(self, value: int) -> str:
        """The envelope of the message for value, with a new task id and delivery tag."""
        text = str(value)
        body = base64.b64encode(f"{self._body[0]}{text}{self._body[1]}".encode()).decode("ascii")
        fields: dict[str, Any] = {"id": uuid(), "tag": uuid(), "value": text, "body": body}
        parts = self._parts
        out = [parts[0]]
        for index, field in enumerate(self._fields, 1):
            out.append(fields[field])
            out.append(parts[index])
        return "".join(out)


class DeliverMessages(TaskMessages):
    """Deliver task messages (`deliver(delivery_id=...)`) from one template."""

    def __init__(self, producer: Producer) -> None:
        super().__init__(producer, TaskName.DELIVER, "delivery_id")

    def publish_many(self, delivery_ids: Sequence[int], queue_name: str) -> None:
        self.send_many(delivery_ids, queue_name)
