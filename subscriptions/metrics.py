"""Prometheus metrics: what the hub counts, and `GET /metrics` that exposes it.

Counters and histograms run in prometheus_client's multiprocess mode: every
process (gunicorn workers, Celery pool processes) writes its values to files
in HUB_METRICS_DIR, and a scrape adds up all the files of this machine. So a
delivery counted by a worker shows on the web process's /metrics when both run
on one machine; a machine that runs only workers serves the same files with
`manage.py hub_metrics_server`. websubhub/settings.py sets PROMETHEUS_MULTIPROC_DIR
before anything imports prometheus_client, which reads it once, at import.

Gauges that describe the hub's state (subscriptions per state, queue depths)
are not counted by any process: they are read from the database and the
broker when /metrics is scraped.
"""

import hmac
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from functools import lru_cache

from celery.signals import worker_process_shutdown
from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from subscriptions import health
from subscriptions.models import Notification, Subscription

logger = logging.getLogger(__name__)

if not values.ValueClass._multiprocess:
    # Something imported prometheus_client before settings set the variable
    # (Flower does, for its own metrics): this process counts alone, and its
    # counts do not reach /metrics. Harmless for a process that delivers nothing.
    logger.warning(
        "prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set: this process's hub metrics "
        "stay local (set PROMETHEUS_MULTIPROC_DIR in its environment to include them)"
    )

PREFIX = "websubhub_"
DELIVERY_OUTCOMES = ("delivered", "retried", "failed", "rate_limited", "gone", "cancelled", "parked")
VERIFICATION_OUTCOMES = ("verified", "failed", "denied")
# Publish to delivered spans queueing, rate limits and retries: from tens of
# milliseconds on a quiet hub to a day of retries (seconds).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
# One POST: bounded by HUB_HTTP_TOTAL_TIMEOUT (seconds).
ATTEMPT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Up to this many subscriptions /metrics counts them exactly (one GROUP BY);
# above it, on PostgreSQL, it takes the planner's estimate, which costs nothing.
EXACT_COUNT_MAX = 100_000
# Notifications whose publish time a process remembers (about 100 bytes each).
PUBLISHED_AT_CACHE = 10_000

notifications_accepted = Counter(
    PREFIX + "notifications_accepted", "Notifications accepted for fan-out (API, publish pings, manage.py hub_publish)."
)
deliveries = Counter(
    PREFIX + "deliveries",
    "Delivery runs by outcome: delivered, retried (attempt failed, another follows), failed (out of retries), "
    "rate_limited (deferred before an attempt by the rate limit or the cap on requests in flight), "
    "gone (410), cancelled (subscription ended), parked (subscription paused).",
    ["outcome"],
)
delivery_latency = Histogram(
    PREFIX + "delivery_latency_seconds",
    "Seconds from publish (the notification's creation) to the delivering attempt's answer.",
    buckets=LATENCY_BUCKETS,
)
delivery_attempt_duration = Histogram(
    PREFIX + "delivery_attempt_duration_seconds",
    "Seconds one delivery POST took, whatever its outcome.",
    buckets=ATTEMPT_BUCKETS,
)
verifications = Counter(
    PREFIX + "verifications",
    "(Un)subscribe requests completed, by outcome: verified, failed, denied.",
    ["outcome"],
)
# Every label value from the start, so a scrape shows 0 rather than nothing.
for _outcome in DELIVERY_OUTCOMES:
    deliveries.labels(outcome=_outcome)
for _outcome in VERIFICATION_OUTCOMES:
    verifications.labels(outcome=_outcome)


# --- Recording (called by services) ------------------------------------------------------


def notification_accepted() -> None:
    notifications_accepted.inc()


def delivery_outcome(outcome: str) -> None:
    deliveries.labels(outcome=outcome).inc()


def delivery_attempted(seconds: float) -> None:
    delivery_attempt_duration.observe(seconds)


def delivery_delivered(*, notification_id: int, delivered_at: datetime) -> None:
    deliveries.labels(outcome="delivered").inc()
    published_at = _published_at(notification_id)
    if published_at is not None:
        delivery_latency.observe(max(0.0, (delivered_at - published_at).total_seconds()))


@lru_cache(maxsize=PUBLISHED_AT_CACHE)
def _published_at(notification_id: int) -> datetime | None:
    # A notification never changes: a fan-out reads its time once per process.
    return Notification.objects.filter(pk=notification_id).values_list("created_at", flat=True).first()


def verification_outcome(outcome: str) -> None:
    if outcome in VERIFICATION_OUTCOMES:
        verifications.labels(outcome=outcome).inc()


@worker_process_shutdown.connect
def _celery_process_dead(pid: int | None = None, **kwargs: object) -> None:
    """A prefork pool process ended: drop its live-gauge files (its counters stay, as Prometheus expects)."""
    mark_process_dead(pid or os.getpid())


def mark_process_dead(pid: int) -> None:
    multiprocess.mark_process_dead(pid, str(settings.HUB_METRICS_DIR))


# --- Scrape-time state --------------------------------------------------------------------


def _estimated_rows(queryset: QuerySet) -> int:
    """The PostgreSQL planner's row estimate for a query: no scan."""
    plan = json.loads(queryset.explain(format="json"))
    return int(plan[0]["Plan"]["Plan Rows"])


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
            for queue, number in queue_depths(settings.HUB_QUEUES).items():
                depth.add_metric([queue], number)
        except Exception as exc:  # noqa: BLE001 - a scrape without queue depths beats a failed scrape
            logger.warning("metrics: queue depths unavailable: %s: %s", type(exc).__name__, exc)
        yield depth


def multiprocess_registry() -> CollectorRegistry:
    """A registry of every process's counters and histograms on this machine."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(settings.HUB_METRICS_DIR))
    return registry


def token_allows(authorization: str | None) -> bool:
    """Whether a request's Authorization header may read metrics (any, when HUB_METRICS_TOKEN is unset)."""
    token = settings.HUB_METRICS_TOKEN
    if not token:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def unauthorized() -> HttpResponse:
    response = HttpResponse("Metrics need Authorization: Bearer <HUB_METRICS_TOKEN>.\n", status=401)
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text (or OpenMetrics, when asked): counters of every process here plus state gauges."""
    if not token_allows(request.headers.get("Authorization")):
        return unauthorized()
    registry = multiprocess_registry()
    registry.register(HubStateCollector())
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(registry), content_type=content_type)


def worker_metrics_app(environ: dict, start_response: Callable) -> list[bytes]:
    """A WSGI app serving only this machine's counters at /metrics (manage.py hub_metrics_server).

    No state gauges: those come from the web's /metrics, and a second copy
    would double them in any sum across instances.
    """
    if environ.get("PATH_INFO", "/") not in ("/", "/metrics"):
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"Not found: metrics are at /metrics.\n"]
    if not token_allows(environ.get("HTTP_AUTHORIZATION")):
        start_response(
            "401 Unauthorized",
            [("Content-Type", "text/plain; charset=utf-8"), ("WWW-Authenticate", 'Bearer realm="metrics"')],
        )
        return [b"Metrics need Authorization: Bearer <HUB_METRICS_TOKEN>.\n"]
    encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
    body = encoder(multiprocess_registry())
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]
