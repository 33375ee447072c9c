"""Database connections: giving a pooled connection back while a thread waits on something else."""

from django.db import connection


def connection_release() -> None:
    """Return this thread's connection to the pool before a long wait (an outbound HTTP request).

    A worker runs more threads than its pool has connections (README, "Database
    connections"): a thread that kept its connection through a request to a slow
    callback would starve the others. Its next query borrows one again. Without
    a pool, or inside a transaction, the connection stays: closing it would cost
    a new connection, or end the transaction.
    """
    if connection.connection is None or connection.in_atomic_block:
        return
    if not connection.settings_dict.get("OPTIONS", {}).get("pool"):
        return
    connection.close()
