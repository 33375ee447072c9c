"""The Celery application: `celery -A websubhub worker` (add `-B` or run `celery -A websubhub beat`)."""

import os
from pathlib import Path

from celery import Celery
from celery.signals import beat_embedded_init, task_postrun, task_prerun
from kombu import Exchange, Queue
from kombu.transport import TRANSPORT_ALIASES

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "websubhub.settings")

# The embedded broker (`filesystem://`) is kombu's filesystem transport with a channel
# that does not rescan the message folder for every message (websubhub/embedded_broker.py).
TRANSPORT_ALIASES["filesystem"] = "websubhub.embedded_broker:Transport"
# Redis brokers: kombu's transport with one client per channel (websubhub/redis_broker.py).
TRANSPORT_ALIASES["redis"] = TRANSPORT_ALIASES["rediss"] = "websubhub.redis_broker:Transport"

app = Celery("websubhub")
# Every setting named CELERY_* in websubhub/settings.py configures this app.
app.config_from_object("django.conf:settings", namespace="CELERY")

# The filesystem transport's folders (the embedded broker, CELERY_BROKER_TRANSPORT_OPTIONS).
FILESYSTEM_FOLDER_OPTIONS = ("data_folder_in", "data_folder_out", "control_folder", "processed_folder")


def _hub_queues() -> dict[str, object]:
    """Every hub queue declared on the app, so that a worker started without -Q consumes all of them."""
    from django.conf import settings

    from websubhub.queues import ALL_QUEUES

    exchange = Exchange(settings.CELERY_TASK_DEFAULT_EXCHANGE, type="direct")
    return {"task_queues": tuple(Queue(name, exchange, routing_key=name) for name in ALL_QUEUES)}


# A promise: read when the configuration is first needed, after Django's settings load.
app.add_defaults(_hub_queues)

# A threads-pool worker runs as one process per core (HUB_WORKER_PROCESSES): websubhub/siblings.py.
app.steps["worker"].add("websubhub.siblings:Siblings")


@app.on_after_configure.connect
def _make_broker_folders(sender: Celery, **kwargs: object) -> None:
    """The embedded broker's folders exist before any process (web, worker, beat, flower) opens it."""
    if not str(sender.conf.broker_url).startswith("filesystem"):
        return
    options = sender.conf.broker_transport_options or {}
    for option in FILESYSTEM_FOLDER_OPTIONS:
        if options.get(option):
            Path(options[option]).mkdir(parents=True, exist_ok=True)


@beat_embedded_init.connect
def _embedded_beat_dies_with_worker(**kwargs: object) -> None:
    """The beat process of `worker -B` ends with its worker (websubhub/siblings.py)."""
    from websubhub.siblings import embedded_beat_dies_with_worker

    embedded_beat_dies_with_worker()


@task_prerun.connect
@task_postrun.connect
def _close_old_connections(**kwargs: object) -> None:
    """Drop database connections that are broken or past CONN_MAX_AGE, as Django does around a request.

    With the connection pool (CONN_MAX_AGE 0) this hands the thread's connection
    back to the pool before and after every task.
    """
    from django.db import close_old_connections

    close_old_connections()
