from pathlib import Path

from django.apps import AppConfig


class SubscriptionsConfig(AppConfig):
    name = "subscriptions"
    verbose_name = "WebSub hub"

    def ready(self) -> None:
        make_state_dirs()


def make_state_dirs() -> None:
    """Directories this process writes to, made at start-up rather than when settings are imported.

    VAR_DIR holds the SQLite file and beat's schedule, STATIC_ROOT is where WhiteNoise
    looks, and the metrics directory is also exported as PROMETHEUS_MULTIPROC_DIR for
    this process and its children. The embedded broker's folders are websubhub/celery.py's.
    """
    from django.conf import settings

    from subscriptions.metrics.process import use_metrics_dir

    Path(settings.VAR_DIR).mkdir(parents=True, exist_ok=True)
    Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)
    use_metrics_dir()
