"""The ceiling: a bare Celery app whose one task does one pooled `requests` POST.

It shares nothing with the project but the broker and the sink, so it measures
what Celery + Redis + requests can do on this machine with the same pool and
concurrency as the hub's worker:

    BENCH_BROKER_URL=redis://127.0.0.1:6379/14 celery -A ceiling_app worker ...

(run from bench/, or with bench/ on PYTHONPATH).
"""

import os
import threading

import requests
from celery import Celery
from requests.adapters import HTTPAdapter

app = Celery("bench_ceiling", broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/14"))
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    result_backend=None,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    task_default_queue="bench.ceiling",
)

_local = threading.local()


def _session() -> requests.Session:
    # One keep-alive session per process and thread, as the hub does (subscriptions/http.py).
    pid = os.getpid()
    if getattr(_local, "pid", None) != pid:
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=64, pool_maxsize=64, max_retries=0)
        session.mount("http://", adapter)
        session.trust_env = False
        _local.session, _local.pid = session, pid
    return _local.session


@app.task(name="bench.post", ignore_result=True, acks_late=True)
def post(*, url: str, body: str, delivery_id: str) -> None:
    """POST body to url once, with the delivery id header the sink records."""
    response = _session().post(
        url,
        data=body.encode("utf-8"),
        headers={"Content-Type": "application/json", "X-Hub-Delivery": delivery_id},
        timeout=(5.0, 10.0),
        allow_redirects=False,
    )
    response.close()
