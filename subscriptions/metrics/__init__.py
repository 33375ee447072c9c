"""Prometheus metrics: what the hub counts, and `GET /metrics` that exposes it.

- outcomes.py: the outcome names (DeliveryOutcome, VerificationOutcome), shared with log lines.
- process.py: prometheus_client's multiprocess mode for this process (HUB_METRICS_DIR).
- recording.py: the counters and histograms, and the record functions services call.
- collectors.py: gauges read from the database and the broker at scrape time.
- views.py: Django's /metrics view and the WSGI app of manage.py hub_metrics_server.

Counters and histograms run in prometheus_client's multiprocess mode: every
process (gunicorn workers, Celery pool processes) writes its values to files
in HUB_METRICS_DIR, and a scrape adds up all the files of this machine. So a
delivery counted by a worker shows on the web process's /metrics when both run
on one machine; a machine that runs only workers serves the same files with
`manage.py hub_metrics_server`.

Callers keep `from subscriptions import metrics; metrics.delivery_outcome(...)`.
"""

from subscriptions.metrics.outcomes import (
    DELIVERY_OUTCOMES,
    VERIFICATION_OUTCOMES,
    DeliveryOutcome,
    VerificationOutcome,
)
from subscriptions.metrics.process import mark_process_dead, use_metrics_dir
from subscriptions.metrics.recording import (
    delivery_attempted,
    delivery_delivered,
    delivery_outcome,
    notification_accepted,
    verification_outcome,
)
from subscriptions.metrics.views import metrics_view, worker_metrics_app

__all__ = (
    "DELIVERY_OUTCOMES",
    "VERIFICATION_OUTCOMES",
    "DeliveryOutcome",
    "VerificationOutcome",
    "delivery_attempted",
    "delivery_delivered",
    "delivery_outcome",
    "mark_process_dead",
    "metrics_view",
    "notification_accepted",
    "use_metrics_dir",
    "verification_outcome",
    "worker_metrics_app",
)
