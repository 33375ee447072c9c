"""Importing the settings does nothing; a process's start makes the directories and the metrics set-up it needs."""

import os
import subprocess
import sys
from pathlib import Path

from websubhub.celery import app as celery_app
from websubhub.queues import ALL_QUEUES

ROOT = Path(__file__).resolve().parents[2]

# Settings that would point the hub at this run's services or directories.
_OUTSIDE = ("HUB_METRICS_DIR", "PROMETHEUS_MULTIPROC_DIR", "REDIS_URL", "CELERY_BROKER_URL", "HUB_VAR_DIR")


def _python(code: str, var_dir: Path) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in _OUTSIDE}
    env["HUB_VAR_DIR"] = str(var_dir)
    env["DJANGO_SETTINGS_MODULE"] = "websubhub.settings"
    shown = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    return shown.stdout.split()


def test_importing_the_settings_creates_no_directory_and_changes_no_environment(tmp_path: Path) -> None:
    shown = _python(
        "import os, sys; from websubhub import settings; "
        "print('PROMETHEUS_MULTIPROC_DIR' in os.environ, 'prometheus_client' in sys.modules)",
        tmp_path / "var",
    )
    assert shown == ["False", "False"]
    assert not (tmp_path / "var").exists()


def test_starting_django_makes_the_var_static_and_metrics_directories(tmp_path: Path) -> None:
    var = tmp_path / "var"
    shown = _python(
        "import django, os; django.setup(); from prometheus_client import values; "
        "print(os.environ['PROMETHEUS_MULTIPROC_DIR'], values.ValueClass._multiprocess)",
        var,
    )
    assert shown == [str(var / "metrics"), "True"]
    assert (var / "static").is_dir()


def test_the_embedded_brokers_folders_exist_once_the_celery_app_reads_its_configuration(tmp_path: Path) -> None:
    var = tmp_path / "var"
    shown = _python("from websubhub.celery import app; print(app.conf.broker_url)", var)
    assert shown == ["filesystem://localhost/"]
    for folder in ("data", "control", "processed"):
        assert (var / "broker" / folder).is_dir()


def test_prometheus_client_imported_before_django_still_counts_in_the_metrics_directory(tmp_path: Path) -> None:
    # (as under `celery`, whose Flower plugin imports prometheus_client before Django's settings load)
    var = tmp_path / "var"
    _python(
        "import prometheus_client, django; django.setup(); from subscriptions import metrics; "
        "metrics.notification_accepted()",
        var,
    )
    assert list((var / "metrics").glob("counter_*.db"))


def test_the_celery_app_declares_every_hub_queue_so_a_worker_without_q_consumes_them_all() -> None:
    # (the declared queues: other tests may route to queues of their own, which the app then adds at run time)
    assert [queue.name for queue in celery_app.conf.task_queues] == list(ALL_QUEUES)
    assert set(ALL_QUEUES) <= set(celery_app.amqp.queues)
    assert all(queue.exchange.name == "hub" for queue in celery_app.conf.task_queues)
