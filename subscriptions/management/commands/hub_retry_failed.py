"""python manage.py hub_retry_failed [--subscription ID] [--since TIME] [--delivery ID]"""

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime
from django.utils.timezone import is_naive, make_aware

from subscriptions import services
from subscriptions.models import Delivery, Subscription


class Command(BaseCommand):
    help = (
        "Send failed deliveries (the dead letters) again with a fresh retry budget: all of them, "
        "or those of one subscription, failed since a time, or one delivery."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--subscription", type=int, help="only this subscription's failed deliveries")
        parser.add_argument(
            "--since", help="only deliveries whose last attempt was at or after this ISO 8601 time (UTC if no offset)"
        )
        parser.add_argument("--delivery", type=int, help="only this delivery")
        parser.add_argument("--dry-run", action="store_true", help="count, send nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        deliveries = Delivery.objects.filter(status=Delivery.Status.FAILED)
        if options["subscription"] is not None:
            # A mistyped id must not pass for "nothing to retry".
            if not Subscription.objects.filter(pk=options["subscription"]).exists():
                raise CommandError(f"there is no subscription {options['subscription']}")
            deliveries = deliveries.filter(subscription_id=options["subscription"])
        if options["delivery"] is not None:
            status = Delivery.objects.filter(pk=options["delivery"]).values_list("status", flat=True).first()
            if status is None:
                raise CommandError(f"there is no delivery {options['delivery']}")
            if status != Delivery.Status.FAILED:
                # As POST /api/deliveries/<id>/retry/ answers (409).
                raise CommandError(f"only a failed delivery can be retried; delivery {options['delivery']} is {status}")
            deliveries = deliveries.filter(pk=options["delivery"])
        if options["since"]:
            since = parse_datetime(options["since"])
            if since is None:
                raise CommandError(
                    f"--since must be an ISO 8601 time such as 2026-11-28T10:00:00Z, not {options['since']!r}"
                )
            deliveries = deliveries.filter(last_attempt_at__gte=make_aware(since) if is_naive(since) else since)
        if options["dry_run"]:
            self.stdout.write(f"{deliveries.count()} failed deliveries would be sent again")
            return
        show = self.stderr.isatty()

        def progress(done: int, total: int) -> None:
            if show:
                width = 30
                filled = width * done // max(total, 1)
                self.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}", ending="")

        count = services.deliveries_replay(deliveries, progress=progress)
        if show and count:
            self.stderr.write("")
        self.stdout.write(self.style.SUCCESS(f"{count} failed deliveries sent again"))
