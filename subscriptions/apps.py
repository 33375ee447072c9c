from django.apps import AppConfig
from django.core import checks


class SubscriptionsConfig(AppConfig):
    name = "subscriptions"
    verbose_name = "WebSub hub"

    def ready(self) -> None:
        checks.register(check_settings)


def check_settings(**kwargs: object) -> list[checks.CheckMessage]:
    """Settings that are read lazily are still checked at start-up (`manage.py check`, runserver, worker)."""
    from django.conf import settings

    from subscriptions import ratelimit

    errors: list[checks.CheckMessage] = []
    try:
        ratelimit.parse_rate(settings.HUB_CALLBACK_RATE_LIMIT)
    except ratelimit.InvalidRate as exc:
        errors.append(checks.Error(f"HUB_CALLBACK_RATE_LIMIT: {exc}", id="websubhub.E001"))
    return errors
