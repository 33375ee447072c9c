"""What the hub counts: the counters and histograms, and the functions services call to record them.

Counters and histograms run in prometheus_client's multiprocess mode
(subscriptions/metrics/process.py), so a count made by any process of this
machine shows on its /metrics.
"""

import logging
from datetime import datetime

from prometheus_client import Counter, Histogram, values

from subscriptions.metrics.outcomes import (
    DELIVERY_OUTCOMES,
    VERIFICATION_OUTCOMES,
    DeliveryOutcome,
    VerificationOutcome,
)
from subscriptions.metrics.process import use_metrics_dir

logger = logging.getLogger(__name__)

# Before any metric is created: each takes its value class when created.
use_metrics_dir()
if not values.ValueClass._multiprocess:
    # Something imported prometheus_client before settings set the variable
    # (Flower does, for its own metrics): this process counts alone, and its
    # counts do not reach /metrics. Harmless for a process that delivers nothing.
    logger.warning(
        "prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set: this process's hub metrics "
        "stay local (set PROMETHEUS_MULTIPROC_DIR in its environment to include them)"
    )

PREFIX = "websubhub_"
# Publish to delivered spans queueing, rate limits and retries: from tens of
# milliseconds on a quiet hub to a day of retries (seconds).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
# One POST: bounded by HUB_HTTP_TOTAL_TIMEOUT (seconds).
ATTEMPT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

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


def delivery_outcome(outcome: DeliveryOutcome | str) -> None:
    """Count a delivery run's outcome; a plain string must be one of DeliveryOutcome's values."""
    deliveries.labels(outcome=DeliveryOutcome(outcome).value).inc()


def delivery_attempted(seconds: float) -> None:
    delivery_attempt_duration.observe(seconds)


def delivery_delivered(*, published_at: datetime, delivered_at: datetime) -> None:
    deliveries.labels(outcome=DeliveryOutcome.DELIVERED.value).inc()
    delivery_latency.observe(max(0.0, (delivered_at - published_at).total_seconds()))


def verification_outcome(outcome: VerificationOutcome | str) -> None:
    """Count a completed (un)subscribe request; any other state (a request still pending) is not counted."""
    if outcome in VERIFICATION_OUTCOMES:
        verifications.labels(outcome=VerificationOutcome(outcome).value).inc()
