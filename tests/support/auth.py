"""API clients with tokens, as `manage.py hub_token` makes them, and admin clients of staff users."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from rest_framework.authtoken.models import Token

CODENAMES = {"publish": "publish_notification", "manage": "manage_hub"}


def token_for(name: str, *, publish: bool = False, manage: bool = False) -> str:
    user, _ = get_user_model().objects.get_or_create(username=name)
    for flag, wanted in (("publish", publish), ("manage", manage)):
        if wanted:
            user.user_permissions.add(
                Permission.objects.get(content_type__app_label="subscriptions", codename=CODENAMES[flag])
            )
    token, _ = Token.objects.get_or_create(user=user)
    return token.key


def api_client(*, publish: bool = True, manage: bool = True) -> Client:
    """A test client whose every request carries a token with the given permissions (both by default)."""
    name = "test-" + "-".join(flag for flag, on in (("publish", publish), ("manage", manage)) if on)
    return Client(HTTP_AUTHORIZATION=f"Token {token_for(name, publish=publish, manage=manage)}")


def staff_client(name: str, *codenames: str) -> Client:
    """A test client logged in to the admin as a new staff user holding the app's permissions named."""
    user = get_user_model().objects.create_user(name, password="not-used-here", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="subscriptions", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client
