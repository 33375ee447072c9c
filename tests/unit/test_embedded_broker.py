"""The embedded broker takes each message once, oldest first per queue, from a folder it lists once per batch."""

import threading
from pathlib import Path

from kombu import Connection, Exchange, Queue

from websubhub import embedded_broker


def _connection(folder: Path) -> Connection:
    options = {
        "data_folder_in": str(folder / "data"),
        "data_folder_out": str(folder / "data"),
        "control_folder": str(folder / "control"),
        "processed_folder": str(folder / "processed"),
        "store_processed": False,
        "polling_interval": 0.01,
    }
    for name in ("data", "control", "processed"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    return Connection("filesystem://", transport_options=options)


def test_the_filesystem_alias_is_the_hubs_channel() -> None:
    import websubhub.celery  # noqa: F401 - registers the alias

    with Connection("filesystem://") as connection:
        assert connection.transport_cls == "websubhub.embedded_broker:Transport" or isinstance(
            connection.transport, embedded_broker.Transport
        )


def test_messages_come_out_once_per_queue_across_queues(tmp_path: Path) -> None:
    exchange = Exchange("hub", type="direct")
    queues = [Queue(name, exchange, routing_key=name) for name in ("q.a", "q.b")]
    with _connection(tmp_path) as connection:
        producer = connection.Producer()
        for n in range(50):
            for queue in queues:
                producer.publish({"n": n}, exchange=exchange, routing_key=queue.name, declare=[queue])
        channel = connection.channel()
        assert isinstance(channel, embedded_broker.Channel)
        got = {name: [] for name in ("q.a", "q.b")}
        for name in got:
            while (message := channel.basic_get(name, no_ack=True)) is not None:
                got[name].append(message.decode()["n"])
        # oldest first by the millisecond in kombu's file names (within one millisecond, in any order)
        assert {name: sorted(ns) for name, ns in got.items()} == {"q.a": list(range(50)), "q.b": list(range(50))}
        assert list((tmp_path / "data").iterdir()) == [] and list((tmp_path / "processed").iterdir()) == []


def test_two_consumers_on_one_folder_take_each_message_once(tmp_path: Path) -> None:
    exchange = Exchange("hub", type="direct")
    queue = Queue("q.shared", exchange, routing_key="q.shared")
    with _connection(tmp_path) as connection:
        producer = connection.Producer()
        for n in range(400):
            producer.publish({"n": n}, exchange=exchange, routing_key="q.shared", declare=[queue])
    taken: list[list[int]] = [[], []]

    def consume(mine: list[int]) -> None:
        with _connection(tmp_path) as connection:
            channel = connection.channel()
            while (message := channel.basic_get("q.shared", no_ack=True)) is not None:
                mine.append(message.decode()["n"])

    threads = [threading.Thread(target=consume, args=(mine,)) for mine in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(taken[0] + taken[1]) == list(range(400))
