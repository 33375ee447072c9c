"""Spread messages sent in batches by a web process's sender thread (subscriptions/services/spread_sender.py).

The messages go to the test run's real broker (Redis, or the filesystem broker
on the embedded settings) and are read back from the spread queue. The sender
thread reads nothing from the database, but the publish commits its row
(transaction=True) as a web request does.
"""

import contextlib
import logging
import uuid
from collections.abc import Iterator

import pytest
from django.contrib.auth import get_user_model

from subscriptions import services
from subscriptions.models import Notification
from subscriptions.services import spread_sender
from tests.support.processes import queue_drain
from websubhub.celery import app as celery_app
from websubhub.queues import TaskName

pytestmark = pytest.mark.django_db(transaction=True)


# A queue of these tests' own: an end-to-end test's worker may be consuming the spread queue.
QUEUE = f"test-spread-{uuid.uuid4()}"


@pytest.fixture
def sending() -> Iterator[list[list[int]]]:
    """The process sends spread as a web process does (to QUEUE); yields the batches its thread sent."""
    batches: list[list[int]] = []

    def send(batch: list[int]) -> None:
        batches.append(list(batch))
        spread_sender.spread_messages_send(batch, queue=QUEUE)

    spread_sender.sender.enable(send)
    yield batches
    spread_sender.sender.stop()
    queue_drain(QUEUE)


def test_in_a_web_process_a_publish_is_sent_to_spread_by_the_sender_thread(
    sending: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a web process's sender, and a send_task that would tell if the request sent its own message
    called: list[str] = []
    monkeypatch.setattr(celery_app, "send_task", lambda name, **kw: called.append(name))
    # when three notifications are published, one of them with an Idempotency-Key (its own transaction)
    ids = [services.notification_publish_json(topic="UN.CEFACT.TRADE", content={"n": n}).pk for n in range(2)]
    client = get_user_model().objects.create(username="publisher")
    ids.append(
        services.notification_publish_idempotent(
            client_id=client.pk, key="k-1", topic="UN.CEFACT", content=1
        ).notification_id
    )
    # then the sender thread sent them, and the requests sent nothing themselves
    assert spread_sender.sender.flush(timeout=30)
    assert called == []
    assert sorted(i for batch in sending for i in batch) == sorted(ids)
    messages = queue_drain(QUEUE)
    assert sorted(m.decode()[1]["notification_id"] for m in messages) == sorted(ids)
    assert {m.headers["task"] for m in messages} == {TaskName.SPREAD}
    assert len({m.headers["id"] for m in messages}) == 3


def test_a_sent_message_is_the_one_send_task_would_send_but_for_its_task_id(sending: list) -> None:
    # given one spread message sent by Celery's send_task and one by the sender thread
    celery_app.send_task(TaskName.SPREAD, kwargs={"notification_id": 7}, queue=QUEUE)
    spread_sender.spread_messages_send([8], queue=QUEUE)
    # when both are read back
    by_id = {m.decode()[1]["notification_id"]: m for m in queue_drain(QUEUE)}
    reference, sent = by_id[7], by_id[8]
    # then they differ only in the task id and the argument
    ids = ("id", "root_id", "kwargsrepr")
    assert {k: v for k, v in sent.headers.items() if k not in ids} == {
        k: v for k, v in reference.headers.items() if k not in ids
    }
    assert sent.headers["kwargsrepr"] == repr({"notification_id": 8})
    assert sent.headers["root_id"] == sent.headers["id"] != reference.headers["id"]
    assert sent.properties["correlation_id"] == sent.headers["id"]
    others = ("correlation_id", "reply_to", "delivery_tag", "delivery_info")
    assert {k: v for k, v in sent.properties.items() if k not in others} == {
        k: v for k, v in reference.properties.items() if k not in others
    }
    assert sent.content_type == reference.content_type
    assert sent.delivery_info["routing_key"] == reference.delivery_info["routing_key"] == QUEUE
    args, _, embed = sent.decode()
    assert (args, embed) == (reference.decode()[0], reference.decode()[2])


def test_messages_sent_together_are_the_first_ones_envelope_with_their_own_ids(sending: list) -> None:
    # when three spread messages are sent together (on Redis: the last two from the first one's envelope)
    spread_sender.spread_messages_send([11, 12, 13], queue=QUEUE)
    # then each reads back as the first but for its ids and argument
    by_id = {m.decode()[1]["notification_id"]: m for m in queue_drain(QUEUE)}
    assert sorted(by_id) == [11, 12, 13]
    first = by_id[11]
    for value in (12, 13):
        message = by_id[value]
        ids = ("id", "root_id", "kwargsrepr")
        assert {k: v for k, v in message.headers.items() if k not in ids} == {
            k: v for k, v in first.headers.items() if k not in ids
        }
        assert message.headers["kwargsrepr"] == repr({"notification_id": value})
        assert message.headers["root_id"] == message.headers["id"] == message.properties["correlation_id"]
        others = ("correlation_id", "delivery_tag")
        assert {k: v for k, v in message.properties.items() if k not in others} == {
            k: v for k, v in first.properties.items() if k not in others
        }
        assert (message.content_type, message.content_encoding) == (first.content_type, first.content_encoding)
        assert message.decode() == [first.decode()[0], {"notification_id": value}, first.decode()[2]]
    assert len({m.headers["id"] for m in by_id.values()}) == 3
    assert len({m.properties["delivery_tag"] for m in by_id.values()}) == 3


def test_a_messages_envelope_is_kombus_own_text_with_holes_for_its_ids() -> None:
    from subscriptions.services import queueing

    with celery_app.producer_or_acquire() as producer:
        if not isinstance(producer.channel, queueing.TEMPLATE_CHANNELS):
            pytest.skip("the envelope template is the hub's Redis and embedded brokers'")
        messages = queueing.TaskMessages(producer, TaskName.SPREAD, "notification_id")
        # given the template, and a message kombu itself encodes, captured before its push
        envelopes = queueing.Envelopes.capture(messages, QUEUE)
        with producer.channel.envelope_capture() as captured:
            messages.send(424242, QUEUE, task_id="a-task-id")
    # when the template builds the same message
    import json

    built = json.loads(envelopes.build(424242))
    ((key, kombus),) = captured
    # then the two are the same envelope but for the task id and the delivery tag
    assert key == envelopes.key == QUEUE
    assert built["headers"]["id"] == built["headers"]["root_id"] == built["properties"]["correlation_id"]
    for envelope in (built, kombus):
        envelope["headers"]["id"] = envelope["headers"]["root_id"] = envelope["properties"]["correlation_id"] = "x"
        envelope["properties"]["delivery_tag"] = "y"
    assert built == json.loads(json.dumps(kombus))


def test_stop_sends_everything_handed_over_before_it_returns(sending: list) -> None:
    # given ids handed over and not yet sent
    for notification_id in range(1, 201):
        assert spread_sender.sender.submit(notification_id)
    # when the process stops its sender (gunicorn's worker_exit, or exit)
    spread_sender.spread_batching_stop()
    # then every one was sent, and from now on the requests send their own
    assert sorted(i for batch in sending for i in batch) == list(range(1, 201))
    assert len(queue_drain(QUEUE)) == 200
    assert not spread_sender.sender.submit(201)


def test_a_broker_that_refuses_leaves_the_notifications_unspread_for_the_sweep(
    sending: list, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # given a broker that refuses every message
    @contextlib.contextmanager
    def refusing(*args: object, **kwargs: object) -> Iterator[None]:
        from kombu.exceptions import OperationalError

        raise OperationalError("broker down")
        yield

    monkeypatch.setattr(celery_app, "producer_or_acquire", refusing)
    # when a notification is published
    with caplog.at_level(logging.ERROR, logger="subscriptions.services"):
        notification = services.notification_publish_json(topic="orders.created", content=None)
        assert spread_sender.sender.flush(timeout=30)
    # then it is stored, never spread, and the log says the sweep sends it (the sweep's own query finds it)
    assert Notification.objects.filter(pk=notification.pk, spread_at__isnull=True).exists()
    assert "could not be sent to spread now; the sweep sends them" in caplog.text


@pytest.mark.parametrize("in_a_transaction", [False, True])
def test_without_the_sender_a_refused_spread_message_is_logged_and_the_publish_stands(
    in_a_transaction: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # given no sender thread (a management command, a worker) and a broker that refuses the request's own message
    from django.db import transaction
    from kombu.exceptions import OperationalError

    def refusing(name: str, **kwargs: object) -> None:
        raise OperationalError("broker down")

    monkeypatch.setattr(celery_app, "send_task", refusing)
    # when a notification is published on its own (autocommit) or inside a caller's transaction
    with (
        caplog.at_level(logging.ERROR, logger="subscriptions.services"),
        transaction.atomic() if in_a_transaction else contextlib.nullcontext(),
    ):
        notification = services.notification_publish_json(topic="orders.created", content={"n": 1})
    # then it is stored, unspread for the sweep, and the refusal is logged rather than raised
    assert Notification.objects.filter(pk=notification.pk, spread_at__isnull=True).exists()
    assert f"notification {notification.pk}: its spread message could not be sent now" in caplog.text
