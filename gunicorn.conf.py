"""Gunicorn settings that the command line cannot carry (`gunicorn -c gunicorn.conf.py`, see Procfile).

Bind address and worker count stay on the command line.
"""

import logging
import os
import sys

from websubhub.hub_settings import environment_value
from websubhub.logformat import LOG_FORMATTERS

# Threads per web worker: a request spends much of its time waiting on
# PostgreSQL and Redis, so each worker process serves several at once
# (bench/RESULTS.md, scenario 5). HUB_WEB_THREADS=1 gives the plain sync worker.
# Gunicorn reads this file before Django starts: HUB_* values are read with their
# declarations (websubhub/hub_settings.py), so a wrong one fails here as in Django.
threads = environment_value("HUB_WEB_THREADS")
worker_class = "gthread" if threads > 1 else "sync"

# Gunicorn's own lines (its error log and the access log) in the hub's format
# (HUB_LOG_FORMAT, websubhub/logformat.py): "time level logger message" in plain
# text, one JSON object per line in json; to standard error like every other line.
_log_format = environment_value("HUB_LOG_FORMAT")
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {_log_format: LOG_FORMATTERS[_log_format]},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": _log_format, "stream": "ext://sys.stderr"},
    },
    "root": {"level": "INFO", "handlers": ["console"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["console"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
    },
}

# Gunicorn's control socket (gunicornc) defaults to ~/.gunicorn/gunicorn.ctl, one
# path for every instance of a user: a second hub on the machine would take it
# over. Each hub keeps its own under its var directory (HUB_VAR_DIR).
# https://gunicorn.org/reference/settings/#control_socket
control_socket = str(environment_value("HUB_VAR_DIR") / "gunicorn.ctl")


def post_worker_init(worker: object) -> None:
    """Without --access-logfile, no access lines: the logconfig_dict above alone would turn them on.

    And the worker's publishes go to spread from its sender thread (services/spread_sender.py).
    """
    if worker.cfg.accesslog is None:  # type: ignore[attr-defined]
        logging.getLogger("gunicorn.access").disabled = True
        # gunicorn would still format every request's access line before the disabled logger drops it.
        worker.log.access = lambda *args, **kwargs: None  # type: ignore[attr-defined]
    from django.apps import apps

    # The hub's application is loaded by now (bench/baseline_app.py, served with these settings, is not the hub).
    if apps.ready and apps.is_installed("subscriptions"):
        from subscriptions.services import spread_batching_start

        spread_batching_start()


def worker_exit(server: object, worker: object) -> None:
    """A web worker stops: send the spread messages its sender thread still holds (services/spread_sender.py)."""
    sender = sys.modules.get("subscriptions.services.spread_sender")
    if sender is not None:  # not when the worker failed before loading the hub
        sender.spread_batching_stop()


def child_exit(server: object, worker: object) -> None:
    """A web worker ended: drop its live-gauge metric files (prometheus_client multiprocess bookkeeping)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "websubhub.settings")
    from websubhub.hub_settings import hub_settings

    # The master counts nothing itself, so prometheus_client's mode here does not matter: the directory is given.
    path = str(hub_settings.HUB_METRICS_DIR)
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, path)  # type: ignore[attr-defined]
