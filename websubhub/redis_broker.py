"""The Redis broker: kombu's Redis transport, with one Redis client per channel instead of one per command.

kombu's Redis channel builds a new `redis.Redis` client (on its one connection
pool) for every message it publishes and for most other commands. With
redis-py 8 a client's construction costs more than the LPUSH it sends: a third
of a publish request's Python work in the web process, and a large share of a
spread's. This channel keeps the client it built and hands it out again while
the channel's connection pool stays the same (kombu replaces the pool after a
fork or a reconnection; a new client is built then). A `redis.Redis` client is
safe to share between threads: each command borrows a connection from the pool.

websubhub/celery.py points kombu's `redis` and `rediss` aliases here, so broker
URLs stay `redis://` and `rediss://`.
"""

from typing import Any

from kombu.transport import redis


class Channel(redis.Channel):
    _hub_client: tuple[Any, Any] | None = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        cached = self._hub_client
        if cached is None or cached[0] is not pool:
            cached = self._hub_client = (pool, super()._create_client())
        return cached[1]


class Transport(redis.Transport):
    Channel = Channel
