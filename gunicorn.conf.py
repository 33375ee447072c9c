"""Gunicorn settings that the command line cannot carry (`gunicorn -c gunicorn.conf.py`, see Procfile).

Bind address and worker count stay on the command line.
"""

import os

# Threads per web worker: a request spends much of its time waiting on
# PostgreSQL and Redis, so each worker process serves several at once
# (bench/RESULTS.md, scenario 5). HUB_WEB_THREADS=1 gives the plain sync worker.
threads = int(os.environ.get("HUB_WEB_THREADS", "4"))
worker_class = "gthread" if threads > 1 else "sync"

# Gunicorn's own lines (its error log and the access log) in the hub's format:
# with HUB_LOG_FORMAT=json, one JSON object per line like Django's.
if os.environ.get("HUB_LOG_FORMAT", "plain").lower() == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "websubhub.logformat.JsonFormatter"}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"},
            "error_console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
        },
        "root": {"level": "INFO", "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
        },
    }


def child_exit(server: object, worker: object) -> None:
    """A web worker ended: drop its live-gauge metric files (prometheus_client multiprocess bookkeeping)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "websubhub.settings")
    from django.conf import settings

    # Settings first: they set PROMETHEUS_MULTIPROC_DIR, which prometheus_client reads on import.
    path = str(settings.HUB_METRICS_DIR)
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, path)  # type: ignore[attr-defined]
