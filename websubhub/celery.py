"""The Celery application: `celery -A websubhub worker` (add `-B` or run `celery -A websubhub beat`)."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "websubhub.settings")

app = Celery("websubhub")
# Every setting named CELERY_* in websubhub/settings.py configures this app.
app.config_from_object("django.conf:settings", namespace="CELERY")


@task_prerun.connect
@task_postrun.connect
def _close_old_connections(**kwargs: object) -> None:
    """Drop database connections that are broken or past CONN_MAX_AGE, as Django does around a request.

    With the connection pool (CONN_MAX_AGE 0) this hands the thread's connection
    back to the pool before and after every task.
    """
    from django.db import close_old_connections

    close_old_connections()
