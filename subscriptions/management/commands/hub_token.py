"""python manage.py hub_token NAME [--publish] [--manage]"""

from argparse import ArgumentParser
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from rest_framework.authtoken.models import Token

GRANTS = {
    "publish": ("subscriptions", "publish_notification"),
    "manage": ("subscriptions", "manage_hub"),
}


class Command(BaseCommand):
    help = (
        "Create, or rotate, the API token of a named client and grant it permissions. The token is printed "
        "alone on the last line of output; a rotated token replaces the old one at once. Without --publish or "
        "--manage the client keeps the permissions it has."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("name", help="the client's name (a user account without a password is kept for it)")
        parser.add_argument("--publish", action="store_true", help="may publish: POST /api/notifications/")
        parser.add_argument(
            "--manage", action="store_true", help="may manage: /api/subscriptions/, /api/deliveries/, replay"
        )

    def handle(self, *args: Any, name: str, publish: bool, manage: bool, **options: Any) -> None:
        name = name.strip()
        if not name or len(name) > 150:
            raise CommandError("the name must have 1 to 150 characters")
        user_model = get_user_model()
        with transaction.atomic():
            user, created = user_model.objects.get_or_create(username=name)
            if created:
                user.set_unusable_password()
                user.save()
            wanted = [flag for flag, asked in (("publish", publish), ("manage", manage)) if asked]
            for flag in wanted:
                app_label, codename = GRANTS[flag]
                user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
            Token.objects.filter(user=user).delete()
            token = Token.objects.create(user=user)
        fresh = user_model.objects.get(pk=user.pk)  # has_perm caches; read the grants afresh
        granted = sorted(flag for flag, (app, codename) in GRANTS.items() if fresh.has_perm(f"{app}.{codename}"))
        self.stderr.write(
            f"{'created' if created else 'rotated'} the token of {name!r}; permissions: {', '.join(granted) or 'none'}"
        )
        self.stdout.write(token.key)
