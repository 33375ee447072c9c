"""prometheus_client's multiprocess mode for this process: its directory, its environment, and dead processes.

Counters and histograms are written by every process of this machine (gunicorn
workers, Celery pool processes) to files in HUB_METRICS_DIR, and a scrape adds
them up. prometheus_client picks its value class from PROMETHEUS_MULTIPROC_DIR
when first imported, and `celery` may import it before Django's settings load
(Flower's plugin does): `use_metrics_dir()` sets the variable and switches the
value class for every metric created afterwards. It runs before the hub's
metrics are defined (subscriptions/metrics/recording.py) and at start-up
(SubscriptionsConfig.ready()); a second call changes nothing.
https://prometheus.github.io/client_python/multiprocess/
"""

import os
import sys
from pathlib import Path

from celery.signals import worker_process_shutdown
from django.core.exceptions import ImproperlyConfigured

from websubhub.hub_settings import hub_settings

ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"


def use_metrics_dir() -> Path:
    """Make HUB_METRICS_DIR this process's (and its children's) multiprocess directory; return it."""
    metrics_dir = Path(hub_settings.HUB_METRICS_DIR)
    metrics_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault(ENV_VAR, str(metrics_dir))
    if Path(os.environ[ENV_VAR]) != metrics_dir:
        raise ImproperlyConfigured("HUB_METRICS_DIR and PROMETHEUS_MULTIPROC_DIR name different directories: set one")
    if "prometheus_client.values" in sys.modules:
        # Imported before the variable was set: switch it to multiprocess mode
        # for every metric created from now on (all of the hub's are).
        from prometheus_client import values

        if not values.ValueClass._multiprocess:
            values.ValueClass = values.get_value_class()
    return metrics_dir


def mark_process_dead(pid: int) -> None:
    """Drop a dead process's live-gauge files (its counters stay, as Prometheus expects)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(hub_settings.HUB_METRICS_DIR))


@worker_process_shutdown.connect
def _celery_process_dead(pid: int | None = None, **kwargs: object) -> None:
    """A prefork pool process ended: drop its live-gauge files."""
    mark_process_dead(pid or os.getpid())
