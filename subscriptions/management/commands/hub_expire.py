"""python manage.py hub_expire [--dry-run]"""

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone

from subscriptions import services
from subscriptions.models import Subscription


class Command(BaseCommand):
    help = (
        "Remove every subscription whose lease has ended, now, and print how many. Beat's hub.expire_subscriptions "
        "task does the same every HUB_EXPIRE_INTERVAL seconds; expired subscriptions receive nothing either way. "
        "Their pending deliveries are cancelled when next tried; their delivery records are kept."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="count the expired subscriptions, remove nothing")

    def handle(self, *args: Any, dry_run: bool, **options: Any) -> None:
        if dry_run:
            count = Subscription.objects.filter(expires_at__lte=timezone.now()).count()
            self.stdout.write(f"{count} expired subscriptions would be removed")
            return
        count = services.subscriptions_expire()
        self.stdout.write(self.style.SUCCESS(f"{count} expired subscriptions removed"))
