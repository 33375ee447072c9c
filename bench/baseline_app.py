"""The publish baseline: a minimal Django project whose one view inserts one row.

The publish scenario serves it with the hub's gunicorn settings and worker count,
on the hub's PostgreSQL database, and compares accepted POSTs per second:

    DJANGO_SETTINGS_MODULE=baseline_app PYTHONPATH=bench DATABASE_URL=postgres://... \\
        python -m gunicorn -c gunicorn.conf.py baseline_app:application --workers 2

The view reads the same JSON body as POST /api/notifications/ (topic, content),
inserts it into bench_baseline_notification (created by `python bench/baseline_app.py
create-table`, no migration) and answers 202 with the row's id. No middleware, no
authentication, no broker: what any Django view that stores one row costs.

This module is the settings module, the URLconf and the WSGI application at once.
"""

import json
import os
import sys
import threading
from pathlib import Path

import environ
from django.core.wsgi import get_wsgi_application
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

TABLE = "bench_baseline_notification"

# --- Settings ---------------------------------------------------------------------------

SECRET_KEY = "bench-baseline-not-a-secret"  # noqa: S105 - a throwaway key for a local process
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = __name__
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
USE_TZ = True
TIME_ZONE = "UTC"
# Django leaves logging alone: its default configuration would turn gunicorn's access log back on when it is
# set up (on the first request, after gunicorn.conf.py's post_worker_init turned it off, as for the hub).
LOGGING_CONFIG = None
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# The same connection handling as the hub's defaults (websubhub/settings.py): a psycopg pool of 4 per process.
DATABASES = {"default": environ.Env().db("DATABASE_URL")}
DATABASES["default"].update(CONN_MAX_AGE=0, CONN_HEALTH_CHECKS=True)
DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {"min_size": 1, "max_size": 4, "timeout": 5.0}
# gunicorn.conf.py's child_exit hook reads it (prometheus_client's directory of dead workers' files).
HUB_METRICS_DIR = Path(os.environ.get("HUB_VAR_DIR") or Path(__file__).resolve().parent / "out") / "baseline-metrics"


# --- The view ---------------------------------------------------------------------------


@csrf_exempt
def notifications(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        return JsonResponse({"detail": "POST only"}, status=405)
    try:
        data = json.loads(request.body)
        topic = str(data["topic"])
        content = json.dumps(data["content"]).encode()
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"detail": "a JSON object with topic and content"}, status=400)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TABLE} (topic, content, created_at) VALUES (%s, %s, now()) RETURNING id",  # noqa: S608
            [topic, content],
        )
        (pk,) = cursor.fetchone()
    return JsonResponse({"id": pk}, status=202)


urlpatterns = [path("api/notifications/", notifications)]


def create_table() -> None:
    """The one table, without a migration (idempotent)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} ("
            "id bigserial PRIMARY KEY, topic varchar(2048) NOT NULL, content bytea NOT NULL, "
            "created_at timestamptz NOT NULL)"
        )
        cursor.execute(f"TRUNCATE {TABLE}")


_handler = None
_handler_lock = threading.Lock()


def application(environ: dict, start_response: object) -> object:
    """The WSGI application (Django set up on the first request, once this module is fully imported)."""
    global _handler
    if _handler is None:
        with _handler_lock:
            if _handler is None:
                _handler = get_wsgi_application()
    return _handler(environ, start_response)


if __name__ == "__main__":
    if sys.argv[1:] != ["create-table"]:
        raise SystemExit("usage: DJANGO_SETTINGS_MODULE=baseline_app python bench/baseline_app.py create-table")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "baseline_app")
    import django

    django.setup()
    create_table()
    print(json.dumps({"table": TABLE}))
