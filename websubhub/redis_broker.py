"""The Redis broker: kombu's Redis transport with one Redis client per channel, and its ack bookkeeping written late.

One client per channel. kombu's Redis channel builds a new `redis.Redis` client
(on its one connection pool) for every message it publishes and for most other
commands. With redis-py 8 a client's construction costs more than the LPUSH it
sends: a third of a publish request's Python work in the web process, and a
large share of a spread's. This channel keeps the client it built and hands it
out again while the channel's connection pool stays the same (kombu replaces the
pool after a fork or a reconnection; a new client is built then). A
`redis.Redis` client is safe to share between threads: each command borrows a
connection from the pool.

Ack bookkeeping written late. kombu emulates acknowledgements on Redis: each
message a worker takes is written to the `unacked` hash and its index (one
MULTI/EXEC round trip, in the consumer's one thread) and removed again when the
task acks (another). Measured (bench/RESULTS.md) that was 14 % of a worker's
samples, and the consumer thread it blocks is the one every message passes
through. Here both go into a pending list that is written every
ACK_FLUSH_INTERVAL seconds in one pipeline: a message acked within
UNACKED_WRITE_DELAY seconds of its arrival (most deliveries take milliseconds)
never touches Redis again; one held longer (a countdown, a slow callback) is
written then, with the time it arrived, and removed at its ack as before. Before
a channel closes (a warm shutdown) and before a message is rejected back to its
queue everything pending is written, so kombu's restore of unacknowledged
messages sees all of them, as it would without the delay.

What the delay changes: a worker killed with SIGKILL loses from the broker the
messages it took in its last UNACKED_WRITE_DELAY + ACK_FLUSH_INTERVAL seconds
that the hash did not hold yet. Nothing is lost from the hub: the database says
what is owed and the sweep re-sends it (README, Delivery guarantees), which is
also what recovers every other message of a killed worker, since kombu would
give those back only after the visibility timeout (an hour). An ack whose write
is lost with its worker leaves its entry in the hash: the message comes back
after the visibility timeout and finds its work done (every task is idempotent).

Envelopes from a template. A fan-out publishes thousands of messages that differ
only in their ids. kombu builds each envelope (the message with its headers and
properties, JSON-encoded, the body in base64) from scratch: 90 % of a spread's
time. `Channel.envelope_capture` lets TaskMessages (subscriptions/services/
queueing.py) run one message through kombu's own publish path without pushing
it, so the envelope it keeps as a template is exactly what kombu writes; each
further message is that text with its ids put in, pushed with LPUSH as kombu's
`_put` would.

websubhub/celery.py points kombu's `redis` and `rediss` aliases here, so broker
URLs stay `redis://` and `rediss://`.
"""

import logging
import threading
import time
from queue import Empty
from typing import Any

from kombu.transport import redis, virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from redis.exceptions import ResponseError

from websubhub.envelope_capture import EnvelopeCapture

logger = logging.getLogger(__name__)

# Seconds a taken message may go unwritten to the unacked hash (acked sooner: never written).
UNACKED_WRITE_DELAY = 1.0
# Seconds between writes of the pending bookkeeping (also at a message or an ack past it).
ACK_FLUSH_INTERVAL = 0.25
# Messages taken at most with one RPOP after a BRPOP answered (within the prefetch count).
TAKE_MORE_MAX = 64
# Envelopes per LPUSH command when pushing many (Channel.envelopes_push); one pipeline holds them all.
ENVELOPES_PER_COMMAND = 1000


class QoS(redis.QoS):
    """kombu's Redis ack emulation with the writes batched and a quick ack cancelling its message's write."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Reentrant: a warm shutdown's signal handler may close the channel (and flush) while the
        # consumer's thread it interrupted holds either lock.
        self._pending_lock = threading.RLock()
        # One flush at a time, so that an ack's removal never reaches Redis before its message's write.
        self._flush_lock = threading.RLock()
        # delivery tag -> (message, time taken): taken, not written to the hash yet.
        self._unwritten: dict[str, tuple[Any, float]] = {}
        # Acked messages whose entry is in the hash (or being written): removed at the next flush.
        self._acked: list[str] = []
        self._next_flush = time.monotonic() + ACK_FLUSH_INTERVAL

    def append(self, message: Any, delivery_tag: str) -> None:
        with self._pending_lock:
            self._unwritten[delivery_tag] = (message, time.time())
        virtual.QoS.append(self, message, delivery_tag)
        self._flush_when_due()

    def ack(self, delivery_tag: str) -> None:
        with self._pending_lock:
            if self._unwritten.pop(delivery_tag, None) is None:
                self._acked.append(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)
        self._flush_when_due()

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        # kombu reads the message back from the hash to requeue it: write it first.
        self.flush(everything=True)
        super().reject(delivery_tag, requeue=requeue)

    def restore_unacked(self, client: Any = None) -> Any:
        # At shutdown kombu puts back what the hash holds of the unacknowledged messages: all of them.
        self.flush(everything=True)
        return super().restore_unacked(client)

    def _flush_when_due(self) -> None:
        if time.monotonic() >= self._next_flush:
            self.flush()

    def flush(self, *, everything: bool = False) -> None:
        """Write the pending bookkeeping in one pipeline: every ack, and the messages held past the delay (or all)."""
        with self._flush_lock:
            self._next_flush = time.monotonic() + ACK_FLUSH_INTERVAL
            now = time.time()
            with self._pending_lock:
                acked, self._acked = self._acked, []
                due = [
                    (tag, message, taken)
                    for tag, (message, taken) in self._unwritten.items()
                    if everything or now - taken >= UNACKED_WRITE_DELAY
                ]
                for tag, _, _ in due:
                    del self._unwritten[tag]
            if not acked and not due:
                return
            try:
                with self.channel.conn_or_acquire() as client:
                    pipe = client.pipeline()
                    if due:
                        pipe.zadd(self.unacked_index_key, {tag: taken for tag, _, taken in due})
                        pipe.hset(
                            self.unacked_key,
                            mapping={
                                tag: dumps(
                                    [
                                        message._raw,
                                        message.delivery_info["exchange"],
                                        message.delivery_info["routing_key"],
                                    ]
                                )
                                for tag, message, _ in due
                            },
                        )
                    if acked:
                        pipe.zrem(self.unacked_index_key, *acked)
                        pipe.hdel(self.unacked_key, *acked)
                    pipe.execute()
            except Exception:
                # Redis unreachable: keep it all for the next flush (kombu reconnects meanwhile).
                with self._pending_lock:
                    acked_meanwhile = set(self._acked)
                    self._acked[:0] = acked
                    for tag, message, taken in due:
                        if tag not in acked_meanwhile:
                            self._unwritten.setdefault(tag, (message, taken))
                raise


class Channel(EnvelopeCapture, redis.Channel):
    QoS = QoS
    _hub_client: tuple[Any, Any] | None = None
    # Whether the server takes RPOP with a count (Redis 6.2 and later); set False at the first refusal.
    _hub_rpop_count = True

    def envelopes_push(self, key: str, envelopes: list[str]) -> None:
        """LPUSH already encoded envelopes to key, as kombu's `_put` pushes one (a queue without x-expires)."""
        with self.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
            for start in range(0, len(envelopes), ENVELOPES_PER_COMMAND):
                pipe.lpush(key, *envelopes[start : start + ENVELOPES_PER_COMMAND])
            pipe.execute()

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        capture = self._hub_capture
        if capture is None:
            super()._put(queue, message, **kwargs)
            return
        capture.append((self._q_for_pri(queue, self._get_message_priority(message, reverse=False)), message))

    def _brpop_read(self, **options: Any) -> bool:
        """kombu's read of one BRPOP answer, then the messages behind it that the prefetch allows, in one RPOP.

        kombu sends one BRPOP per message, each a command, an answer and a turn of
        the event loop in the consumer's one thread: under a backlog that thread
        was a quarter of a worker's Python work (bench/RESULTS.md). The messages
        taken here go the way the first went (delivered to the consumer, counted by
        the QoS, its unacked bookkeeping), up to what the prefetch count leaves.
        """
        try:
            try:
                answer = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                # A broken connection: disconnect, so that the next poll reconnects.
                self.client.connection.disconnect()
                raise
            if not answer:
                raise Empty()
            key, item = answer
            dest = bytes_to_str(key).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            self.connection._deliver(loads(bytes_to_str(item)), dest)
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()
        self._take_more(key, dest)
        return True

    def _take_more(self, key: bytes, dest: str) -> None:
        if not self._hub_rpop_count or self.closed or self.global_keyprefix:
            return
        room = self.qos.can_consume_max_estimate()
        room = TAKE_MORE_MAX if room is None else min(room, TAKE_MORE_MAX)
        if room <= 0:
            return
        try:
            with self.conn_or_acquire() as client:
                items = client.rpop(key, room)
        except ResponseError:
            self._hub_rpop_count = False  # a server before Redis 6.2: one message per BRPOP, as kombu does
            return
        for item in items or ():
            self.connection._deliver(loads(bytes_to_str(item)), dest)

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        cached = self._hub_client
        if cached is None or cached[0] is not pool:
            cached = self._hub_client = (pool, super()._create_client())
        return cached[1]

    def close(self) -> None:
        # Acks still pending are written before the channel goes (a message with none left restores nothing).
        if not self.closed and self._qos is not None:
            try:
                self._qos.flush(everything=True)
            except Exception:  # a broken connection: what is left is the hash's and the sweep's
                logger.warning("broker channel closing: pending ack bookkeeping not written", exc_info=True)
        super().close()


class Transport(redis.Transport):
    Channel = Channel

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        super().register_with_event_loop(connection, loop)
        cycle = self.cycle
        previous = getattr(cycle, "_hub_ack_flush_tref", None)
        if previous is not None:
            previous.cancel()
        # Writes what waits when no message or ack comes to do it (an idle worker's last acks).
        cycle._hub_ack_flush_tref = loop.call_repeatedly(ACK_FLUSH_INTERVAL, self._flush_channels)

    def _flush_channels(self) -> None:
        for channel in list(self.channels):
            qos = channel._qos
            if qos is not None and not channel.closed:
                qos.flush()
