"""python manage.py hub_purge [--older-than DAYS] [--dry-run]"""

from argparse import ArgumentParser, ArgumentTypeError
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from subscriptions import services
from subscriptions.management.progress import ProgressBar
from subscriptions.services import retention
from websubhub.hub_settings import hub_settings


def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        raise ArgumentTypeError(f"must be a whole number of days, not {text!r}") from None
    if days < 1:
        raise ArgumentTypeError(f"must be at least 1 day, not {days}")
    return days


class Command(BaseCommand):
    help = (
        "Remove, now, what is past retention: notifications older than HUB_RETENTION_DAYS (or --older-than) "
        "whose deliveries are all settled, with those deliveries and their attempts; attempts older than "
        "HUB_ATTEMPT_RETENTION_DAYS; completed subscribe requests as old; expired Idempotency-Keys. "
        "Pending deliveries are never removed. Beat's hub.purge does the same every HUB_RETENTION_INTERVAL seconds."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--older-than",
            type=_days,
            metavar="DAYS",
            help="remove what is older than this (default: HUB_RETENTION_DAYS)",
        )
        parser.add_argument("--dry-run", action="store_true", help="count what would be removed, remove nothing")
        parser.add_argument(
            "--batch", type=int, default=retention.PURGE_BATCH, help="rows per statement (default %(default)s)"
        )

    def handle(self, *args: Any, older_than: int | None, dry_run: bool, batch: int, **options: Any) -> None:
        if older_than is None and not hub_settings.HUB_RETENTION_DAYS and not hub_settings.HUB_ATTEMPT_RETENTION_DAYS:
            self.stderr.write("HUB_RETENTION_DAYS is 0: only expired Idempotency-Keys go (use --older-than DAYS)")
        if batch < 1:
            raise CommandError("--batch must be at least 1")
        plan = services.retention_plan(older_than_days=older_than)
        if dry_run:
            self.stdout.write(f"would remove {plan}")
            return
        bar, total = ProgressBar(self.stderr, unit="rows"), plan.rows

        def progress(counts: services.PurgeCounts) -> None:
            bar(min(counts.rows, total), total)

        counts = services.retention_purge(older_than_days=older_than, batch=batch, progress=progress)
        bar.end()
        self.stdout.write(self.style.SUCCESS(f"removed {counts}"))
