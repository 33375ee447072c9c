"""The Redis broker's ack bookkeeping written late (websubhub/redis_broker.py), against the real Redis broker.

Each test keeps its own unacked hash and index (transport options), so the
session's end-to-end worker, which uses the default keys, never touches them.
"""

import base64
import json
import uuid
from collections.abc import Iterator

import pytest
from django.conf import settings
from kombu import Connection, Consumer, Queue

from websubhub import redis_broker

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (REDIS_URL)")


@pytest.fixture
def keys() -> Iterator[dict[str, str]]:
    name = f"test-acks-{uuid.uuid4().hex}"
    options = {
        "unacked_key": f"{name}:unacked",
        "unacked_index_key": f"{name}:unacked_index",
        "unacked_mutex_key": f"{name}:unacked_mutex",
    }
    yield {"queue": name, **options}
    with Connection(settings.REDIS_URL) as connection:
        connection.default_channel.client.delete(name, *options.values())


def _connection(keys: dict[str, str]) -> Connection:
    options = {k: v for k, v in keys.items() if k != "queue"}
    return Connection(settings.REDIS_URL, transport_options=options)


def _held(connection: Connection, keys: dict[str, str]) -> dict[bytes, bytes]:
    return connection.default_channel.client.hgetall(keys["unacked_key"])


def test_a_message_acked_soon_after_it_was_taken_is_never_written_to_the_unacked_hash(keys: dict) -> None:
    with _connection(keys) as connection:
        queue = connection.SimpleQueue(keys["queue"])
        queue.put({"n": 1})
        # when a consumer takes it and acks it within the delay
        message = queue.get(timeout=5)
        assert _held(connection, keys) == {}
        message.ack()
        queue.channel.qos.flush(everything=True)
        # then the hash never held it, and nothing is left to restore
        assert _held(connection, keys) == {}
        assert queue.channel.client.zcard(keys["unacked_index_key"]) == 0
        queue.close()


def test_a_message_held_past_the_delay_is_written_with_its_arrival_and_removed_at_its_ack(
    keys: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_broker, "UNACKED_WRITE_DELAY", 0.0)
    with _connection(keys) as connection:
        queue = connection.SimpleQueue(keys["queue"])
        queue.put({"n": 2})
        message = queue.get(timeout=5)
        # when the flush runs (the event loop's timer does it every ACK_FLUSH_INTERVAL)
        connection.transport._flush_channels()
        # then the hash holds it as kombu would, so another worker restores it after the visibility timeout
        held = _held(connection, keys)
        assert list(held) == [message.delivery_tag.encode()]
        raw, _exchange, routing_key = json.loads(held[message.delivery_tag.encode()])
        assert json.loads(base64.b64decode(raw["body"])) == {"n": 2} and routing_key == keys["queue"]
        assert queue.channel.client.zcard(keys["unacked_index_key"]) == 1
        # and its ack removes it at the next flush
        message.ack()
        queue.channel.qos.flush()
        assert _held(connection, keys) == {}
        assert queue.channel.client.zcard(keys["unacked_index_key"]) == 0
        queue.close()


def test_a_message_not_acked_when_its_channel_closes_goes_back_to_its_queue(keys: dict) -> None:
    # given a message taken and not acked, within the delay (not written to the hash)
    with _connection(keys) as connection:
        queue = connection.SimpleQueue(keys["queue"])
        queue.put({"n": 3})
        taken = queue.get(timeout=5)
        assert _held(connection, keys) == {}
        # when the connection closes (a warm shutdown)
        queue.close()
    # then the message is in its queue again, and the hash is empty
    with _connection(keys) as connection:
        queue = connection.SimpleQueue(keys["queue"])
        again = queue.get(timeout=5)
        assert again.payload == {"n": 3} and again.delivery_tag == taken.delivery_tag
        again.ack()
        queue.channel.qos.flush(everything=True)
        assert _held(connection, keys) == {}
        queue.close()


def test_acks_pending_when_the_channel_closes_are_written(keys: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    # given a message written to the hash (held past the delay), then acked
    monkeypatch.setattr(redis_broker, "UNACKED_WRITE_DELAY", 0.0)
    with _connection(keys) as connection:
        queue = connection.SimpleQueue(keys["queue"])
        queue.put({"n": 4})
        message = queue.get(timeout=5)
        queue.channel.qos.flush()
        assert len(_held(connection, keys)) == 1
        message.ack()
        # when the connection closes before the next flush (a warm shutdown)
        queue.close()
    # then the ack reached Redis: nothing would come back after the visibility timeout
    with _connection(keys) as connection:
        assert _held(connection, keys) == {}


def test_a_message_rejected_back_to_its_queue_before_it_was_written_is_requeued(keys: dict) -> None:
    with _connection(keys) as connection:
        queue = connection.SimpleQueue(keys["queue"])
        queue.put({"n": 5})
        message = queue.get(timeout=5)
        # when it is rejected with requeue within the delay
        message.requeue()
        # then it is in the queue again (kombu reads it back from the hash, written first)
        again = queue.get(timeout=5)
        assert again.payload == {"n": 5}
        again.ack()
        queue.channel.qos.flush(everything=True)
        assert _held(connection, keys) == {}
        queue.close()


def test_one_brpop_answer_brings_the_messages_behind_it_up_to_the_prefetch_count(keys: dict) -> None:
    # given 10 messages waiting, and a consumer allowed 4 unacknowledged
    with _connection(keys) as connection:
        channel = connection.channel()
        queue = Queue(keys["queue"], channel=channel)
        queue.declare()
        producer = connection.Producer(channel)
        for n in range(10):
            producer.publish({"n": n}, routing_key=keys["queue"])
        received: list = []
        consumer = Consumer(channel, [queue], callbacks=[lambda body, message: received.append(message)])
        consumer.qos(prefetch_count=4)
        consumer.consume()
        # when the consumer reads one answer
        connection.drain_events(timeout=5)
        # then the three behind the first came with it, in order, and the rest wait in the queue
        assert [m.payload["n"] for m in received] == [0, 1, 2, 3]
        assert channel.client.llen(keys["queue"]) == 6
        for message in received:
            message.ack()
        received.clear()
        connection.drain_events(timeout=5)
        assert [m.payload["n"] for m in received] == [4, 5, 6, 7]
        for message in received:
            message.ack()
        consumer.cancel()
        channel.qos.flush(everything=True)
        assert _held(connection, keys) == {}
