"""The delivery's outcome statement is answered from the primary key, whatever the statistics say about pending rows.

With `status = 'pending'` in it, PostgreSQL could answer it from a partial index on
pending rows, and statistics taken while few rows were pending (before a large
fan-out, after a purge) make it prefer that index: under the purge scenario every
outcome scanned 71,000 index entries (72 ms) instead of one row (bench/RESULTS.md).
"""

import pytest
from django.db import connection

from subscriptions.models import Delivery
from subscriptions.services import delivering
from tests.support.factories import NotificationFactory, SubscriptionFactory

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's planner"),
]

ROWS = 20_000


def _plan(sql: str, params: list) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())


@pytest.fixture
def stale_statistics() -> int:
    """Many deliveries, analyzed while settled, then pending: the statistics say no row is pending."""
    notification, subscription = NotificationFactory(), SubscriptionFactory()
    table = Delivery._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (uuid, notification_id, subscription_id, callback, due_at, queued, status, "  # noqa: S608
            "attempts, last_error, created_at, updated_at, replay) "
            "SELECT gen_random_uuid(), %s, %s, 'http://s.example/', now(), true, 'delivered', 1, '', now(), now(), g "
            "FROM generate_series(1, %s) g",
            [notification.pk, subscription.pk, ROWS],
        )
        cursor.execute(f"ANALYZE {table}")
        cursor.execute(f"UPDATE {table} SET status = 'pending' WHERE notification_id = %s", [notification.pk])  # noqa: S608
        cursor.execute(f"SELECT max(id) FROM {table}")  # noqa: S608
        return cursor.fetchone()[0]


def test_the_outcome_update_uses_the_primary_key_when_statistics_say_nothing_is_pending(stale_statistics: int) -> None:
    fields = ("status", "delivered_at", "last_error", "last_status_code", "last_attempt_at", "updated_at")
    _, update = delivering._outcome_sql(connection, ("number",), fields)
    plan = _plan(update, ["delivered", None, "", 204, None, None, stale_statistics])
    assert "subscriptions_delivery_pkey" in plan, plan
    assert "pending" not in plan.split("Filter:")[0], plan


def test_status_equals_pending_would_have_scanned_the_partial_index(stale_statistics: int) -> None:
    # the trap the outcome statement avoids, shown on this PostgreSQL with these statistics
    plan = _plan(
        f"UPDATE {Delivery._meta.db_table} SET attempts = attempts + 1 WHERE id = %s AND status = 'pending'",  # noqa: S608
        [stale_statistics],
    )
    assert "delivery_pending_due" in plan or "delivery_waiting_due" in plan, plan
