"""python manage.py hub_replay --subscription ID --since TIME [--until TIME] [--status STATUS ...]"""

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from subscriptions import services
from subscriptions.filters import REPLAY_STATUSES, ReplayWindowSerializer
from subscriptions.management.progress import ProgressBar
from subscriptions.models import Subscription


class Command(BaseCommand):
    help = (
        "Send a subscription every notification published in a time window once more, each as a new delivery "
        "(new id) through the ordinary pipeline; the originals stay. By default every notification whose delivery "
        "to it settled (delivered, failed or cancelled); --status narrows that."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--subscription", type=int, required=True, help="the subscription's id")
        parser.add_argument("--since", required=True, help="ISO 8601 time (UTC if no offset): published at or after")
        parser.add_argument("--until", help="ISO 8601 time: published before (default: now)")
        parser.add_argument(
            "--status",
            action="append",
            metavar="STATUS",
            help=f"only notifications whose delivery is {', '.join(REPLAY_STATUSES)}; repeat or separate with commas",
        )

    def handle(self, *args: Any, subscription: int, since: str, until: str | None, status: list[str] | None, **_: Any):
        target = Subscription.objects.filter(pk=subscription).first()
        if target is None:
            raise CommandError(f"there is no subscription {subscription}")
        given: dict[str, Any] = {"since": since}
        if until is not None:
            given["until"] = until
        if status:
            given["status"] = [part.strip() for item in status for part in item.split(",") if part.strip()]
        serializer = ReplayWindowSerializer(data=given)
        if not serializer.is_valid():
            name, details = next(iter(serializer.errors.items()))
            raise CommandError(f"--{name} {_first_message(details)}")
        window = serializer.validated_data
        progress = ProgressBar(self.stderr)
        try:
            count = services.subscription_replay(subscription=target, progress=progress, **window)
        except services.HubError as exc:
            raise CommandError(exc.message) from None
        progress.end()
        self.stdout.write(self.style.SUCCESS(f"{count} notifications sent again to subscription {subscription}"))


def _first_message(details: Any) -> str:
    """The first message of a serializer's errors for one field (a list field nests them by index)."""
    while isinstance(details, dict | list):
        details = next(iter(details.values())) if isinstance(details, dict) else details[0]
    return str(details)
