"""The embedded broker takes each message once, oldest first per queue, from a folder it lists once per batch."""

import threading
from collections.abc import Iterable
from pathlib import Path

from kombu import Connection, Exchange, Queue
from kombu.transport import filesystem

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
    with _connection(tmp_path) as connection:
        _publish_numbers(connection, "q.shared", range(400))
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


def _publish_numbers(connection: Connection, queue_name: str, numbers: Iterable[int]) -> None:
    """{"n": n} to queue_name for each n, in order."""
    exchange = Exchange("hub", type="direct")
    queue = Queue(queue_name, exchange, routing_key=queue_name)
    producer = connection.Producer()
    for n in numbers:
        producer.publish({"n": n}, exchange=exchange, routing_key=queue_name, declare=[queue])


def _publish(folder: Path, queue_name: str, body: dict) -> None:
    exchange = Exchange("hub", type="direct")
    with _connection(folder) as connection:
        connection.Producer().publish(
            body, exchange=exchange, routing_key=queue_name, declare=[Queue(queue_name, exchange, queue_name)]
        )


def test_no_reader_sees_a_message_file_before_it_is_written_whole(tmp_path: Path, monkeypatch) -> None:
    # given a writer stopped while it writes the message (as a thread of a busy process can be)
    seen_while_writing: list[object] = []
    real_dumps = embedded_broker.dumps

    def slow_dumps(payload: object) -> str:
        with _connection(tmp_path) as other:
            message = other.channel().basic_get("q.race", no_ack=True)
            seen_while_writing.append(None if message is None else message.decode())
        return real_dumps(payload)

    # (kombu's own channel's module too, so that a channel that writes as kombu does fails here)
    monkeypatch.setattr(embedded_broker, "dumps", slow_dumps)
    monkeypatch.setattr(filesystem, "dumps", slow_dumps)
    # when it publishes while another process takes from the queue
    _publish(tmp_path, "q.race", {"n": 1})
    monkeypatch.setattr(embedded_broker, "dumps", real_dumps)
    monkeypatch.setattr(filesystem, "dumps", real_dumps)
    # then the reader found nothing then (kombu's declare writes a file too), and the whole message after
    assert seen_while_writing and set(seen_while_writing) == {None}
    with _connection(tmp_path) as connection:
        assert connection.channel().basic_get("q.race", no_ack=True).decode() == {"n": 1}


def test_a_file_another_writer_is_still_filling_is_read_once_it_is_whole(tmp_path: Path) -> None:
    # given a message file as kombu's own channel writes it: created under its final name, filled a moment later
    _publish(tmp_path / "source", "q.late", {"n": 2})
    (source,) = (tmp_path / "source" / "data").iterdir()
    content = source.read_bytes()
    (tmp_path / "data").mkdir(parents=True)
    file = (tmp_path / "data" / source.name).open("wb", buffering=0)
    writer = threading.Timer(0.2, lambda: (file.write(content), file.close()))
    writer.start()
    # when a reader takes it before it is filled
    with _connection(tmp_path) as connection:
        message = connection.channel().basic_get("q.late", no_ack=True)
    writer.join()
    # then it waited for the content
    assert message is not None and message.decode() == {"n": 2}


def test_a_file_that_never_reads_as_a_message_is_set_aside_and_the_next_taken(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(embedded_broker, "UNREADABLE_GRACE", 0.05)
    # given a broken message file older than a good one
    (tmp_path / "data").mkdir(parents=True)
    (tmp_path / "data" / "0_0000.q.bad.msg").write_bytes(b'{"trunc')
    _publish(tmp_path, "q.bad", {"n": 3})
    # when a reader takes from the queue
    with _connection(tmp_path) as connection:
        message = connection.channel().basic_get("q.bad", no_ack=True)
    # then it got the good one, and the broken one waits aside for the operator
    assert message.decode() == {"n": 3}
    assert [p.name for p in (tmp_path / "processed").iterdir()] == ["0_0000.q.bad.msg.unreadable"]


def test_oldest_first_by_the_number_a_name_starts_with_not_its_text(tmp_path: Path) -> None:
    # given two messages whose clocks have a different number of digits (as text, 1000_ sorts before 999_)
    for n, stamp in ((1, 999), (2, 1000)):
        _publish(tmp_path, "q.order", {"n": n})
        (fresh,) = (p for p in (tmp_path / "data").iterdir() if "_x." not in p.name)
        fresh.rename(fresh.with_name(f"{stamp}_x.q.order.msg"))
    # when they are taken
    with _connection(tmp_path) as connection:
        channel = connection.channel()
        got = [channel.basic_get("q.order", no_ack=True).decode()["n"] for _ in range(2)]
    # then the older comes first
    assert got == [1, 2]


def test_a_listing_looks_only_at_names_it_has_not_handed_out(tmp_path: Path, monkeypatch) -> None:
    # given a channel that has listed a folder of 200 messages and taken one
    monkeypatch.setattr(embedded_broker, "LIST_INTERVAL", 0.0)
    monkeypatch.setattr(embedded_broker, "LIST_COST_FACTOR", 0)
    looked_at: list[str] = []
    age = embedded_broker._age
    monkeypatch.setattr(embedded_broker, "_age", lambda name: looked_at.append(name) or age(name))
    with _connection(tmp_path) as connection:
        _publish_numbers(connection, "q.busy", range(200))
        channel = connection.channel()
        first = channel.basic_get("q.busy", no_ack=True).decode()["n"]
        assert len(looked_at) == 200
        # when an empty queue asks for a listing after one more message arrived
        _publish_numbers(connection, "q.busy", [200])
        assert channel.basic_get("q.idle", no_ack=True) is None
        # then only the new name was looked at, and every message still comes out once
        assert len(looked_at) == 201
        got = [first]
        while (message := channel.basic_get("q.busy", no_ack=True)) is not None:
            got.append(message.decode()["n"])
        assert sorted(got) == list(range(201)) and got[-1] == 200
