"""Gauges of the hub's state, read from the database and the broker when /metrics is scraped.

No process counts these: subscriptions per state and queue depths are whatever
the database and the broker hold at the moment of the scrape.
"""

import logging
from collections.abc import Iterable, Iterator

from django.db import DatabaseError, connection
from django.db.models import Count, QuerySet
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from subscriptions import health
from subscriptions.metrics.recording import PREFIX
from subscriptions.models import Subscription
from subscriptions.selectors import estimated_rows
from websubhub.queues import ALL_QUEUES

logger = logging.getLogger(__name__)

# Up to this many subscriptions /metrics counts them exactly (one GROUP BY);
# above it, on PostgreSQL, it takes the planner's estimate, which costs nothing.
EXACT_COUNT_MAX = 100_000


def _estimated_rows(queryset: QuerySet) -> int:
    """The planner's row estimate (the caller checked that the database is PostgreSQL)."""
    return estimated_rows(queryset) or 0


def subscription_counts() -> dict[str, int]:
    """Subscriptions per state: exact on small tables, the planner's estimate on large PostgreSQL ones."""
    counts = dict.fromkeys(Subscription.State.values, 0)
    if connection.vendor == "postgresql" and _estimated_rows(Subscription.objects.all()) > EXACT_COUNT_MAX:
        for state in counts:
            counts[state] = _estimated_rows(Subscription.objects.filter(state=state))
        return counts
    for state, number in Subscription.objects.order_by().values_list("state").annotate(n=Count("id")):
        counts[state] = number
    return counts


def queue_depths(queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting in each broker queue, over one connection bounded like /readyz's check.

    Raises when the broker cannot be reached; a queue that does not exist yet is empty.
    """
    depths: dict[str, int] = {}
    with health.broker_connection() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=health.BROKER_TIMEOUT_SECONDS)
        for queue in queues:
            try:
                with conn.channel() as channel:
                    depths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
            except conn.channel_errors:
                depths[queue] = 0
    return depths


class HubStateCollector(Collector):
    """Gauges read when scraped: subscriptions per state and broker queue depths."""

    def collect(self) -> Iterator[Metric]:
        subscriptions = GaugeMetricFamily(
            PREFIX + "subscriptions",
            f"Subscriptions by state (exact up to {EXACT_COUNT_MAX}, then PostgreSQL's estimate).",
            labels=["state"],
        )
        try:
            for state, number in subscription_counts().items():
                subscriptions.add_metric([state], number)
        except DatabaseError as exc:
            # The process counters still answer when the database does not.
            logger.warning("metrics: subscription counts unavailable: %s: %s", type(exc).__name__, exc)
        yield subscriptions

        depth = GaugeMetricFamily(
            PREFIX + "queue_depth",
            "Messages waiting in each broker queue (scheduled retries excluded).",
            labels=["queue"],
        )
        try:
            for queue, number in queue_depths(ALL_QUEUES).items():
                depth.add_metric([queue], number)
        except Exception as exc:  # noqa: BLE001 - a scrape without queue depths beats a failed scrape
            logger.warning("metrics: queue depths unavailable: %s: %s", type(exc).__name__, exc)
        yield depth
