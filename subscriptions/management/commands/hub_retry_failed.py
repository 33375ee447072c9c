"""python manage.py hub_retry_failed [--subscription ID] [--since TIME] [--delivery ID]"""

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from rest_framework.exceptions import ValidationError

from subscriptions import selectors, services
from subscriptions.filters import SINCE_REFUSAL, FailedDeliveryFilterSerializer
from subscriptions.management.progress import ProgressBar
from subscriptions.models import Delivery


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
        # A mistyped id must not pass for "nothing to retry".
        if options["subscription"] is not None and not selectors.subscription_exists(
            subscription_id=options["subscription"]
        ):
            raise CommandError(f"there is no subscription {options['subscription']}")
        if options["delivery"] is not None:
            status = selectors.delivery_status(delivery_id=options["delivery"])
            if status is None:
                raise CommandError(f"there is no delivery {options['delivery']}")
            if status != Delivery.Status.FAILED:
                # As POST /api/deliveries/<id>/retry/ answers (409).
                raise CommandError(f"only a failed delivery can be retried; delivery {options['delivery']} is {status}")
        given = {name: options[name] for name in ("subscription", "delivery") if options[name] is not None}
        if options["since"]:
            given["since"] = options["since"]
        try:
            filters = FailedDeliveryFilterSerializer(data=given).selector_kwargs()
        except ValidationError:
            # argparse has read the ids already: only the time can be refused here.
            raise CommandError(f"--since {SINCE_REFUSAL}, not {options['since']!r}") from None
        deliveries = selectors.deliveries_failed(**filters)
        if options["dry_run"]:
            self.stdout.write(f"{deliveries.count()} failed deliveries would be sent again")
            return
        progress = ProgressBar(self.stderr)
        count = services.deliveries_replay(deliveries, progress=progress)
        progress.end()
        self.stdout.write(self.style.SUCCESS(f"{count} failed deliveries sent again"))
