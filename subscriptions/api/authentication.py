"""Token authentication with a short per-process memory, so a publish does not look its token up every time.

A publisher sends hundreds of requests a second with one token; DRF looks the
token and its user up for each (one query), and the permission check adds
another. Both answers are kept here for HUB_TOKEN_CACHE_SECONDS (default 5) per
process: a token deleted or rotated (`manage.py hub_token`), a user deactivated
or a permission withdrawn takes effect within that time everywhere, and at once
in the process that made the change. 0 turns the memory off.
"""

import threading
import time
from collections import OrderedDict
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Permission
from django.db.models import Q
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.utils.translation import gettext_lazy as _
from rest_framework import HTTP_HEADER_ENCODING
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from websubhub.hub_settings import hub_settings

# Tokens (and users' permission sets) one process remembers at most.
MEMORY_SIZE = 1024

_lock = threading.Lock()
_tokens: OrderedDict[str, tuple[float, Any]] = OrderedDict()
_grants: OrderedDict[int, tuple[float, frozenset[str]]] = OrderedDict()


def _remembered(store: OrderedDict, key: Any) -> Any:
    with _lock:
        entry = store.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del store[key]
            return None
        store.move_to_end(key)
        return entry[1]


def _remember(store: OrderedDict, key: Any, value: Any) -> None:
    seconds = hub_settings.HUB_TOKEN_CACHE_SECONDS
    if seconds <= 0:
        return
    with _lock:
        store[key] = (time.monotonic() + seconds, value)
        store.move_to_end(key)
        while len(store) > MEMORY_SIZE:
            store.popitem(last=False)


def forget_all(**kwargs: object) -> None:
    """Drop everything remembered (a token, user or permission changed in this process)."""
    with _lock:
        _tokens.clear()
        _grants.clear()


class RememberingTokenAuthentication(TokenAuthentication):
    """`Authorization: Token <key>`, the token and its user remembered for a few seconds."""

    def authenticate(self, request: Request) -> tuple[Any, Token] | None:
        """DRF's reading of the header, from META: DRF's goes through `request.headers`, which builds a
        dict of every header of the request for the one it wants (3 % of a publish's CPU)."""
        header = request.META.get("HTTP_AUTHORIZATION", "")
        auth = (header.encode(HTTP_HEADER_ENCODING) if isinstance(header, str) else header).split()
        if not auth or auth[0].lower() != self.keyword.lower().encode():
            return None
        if len(auth) == 1:
            raise AuthenticationFailed(_("Invalid token header. No credentials provided."))
        if len(auth) > 2:
            raise AuthenticationFailed(_("Invalid token header. Token string should not contain spaces."))
        try:
            token = auth[1].decode()
        except UnicodeError:
            raise AuthenticationFailed(
                _("Invalid token header. Token string should not contain invalid characters.")
            ) from None
        return self.authenticate_credentials(token)

    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
        remembered = _remembered(_tokens, key)
        if remembered is not None:
            return remembered
        user, token = super().authenticate_credentials(key)
        _remember(_tokens, key, (user, token))
        return user, token


def hub_permissions(user: Any) -> frozenset[str]:
    """The hub's permission codenames granted to the user or one of their groups (one query, then remembered)."""
    granted = _remembered(_grants, user.pk)
    if granted is None:
        granted = frozenset(
            Permission.objects.filter(content_type__app_label="subscriptions")
            .filter(Q(user=user) | Q(group__user=user))
            .values_list("codename", flat=True)
        )
        _remember(_grants, user.pk, granted)
    return granted


# Changes made in this process take effect at once.
post_save.connect(forget_all, sender=Token, dispatch_uid="hub-token-saved")
post_delete.connect(forget_all, sender=Token, dispatch_uid="hub-token-deleted")
m2m_changed.connect(forget_all, dispatch_uid="hub-permissions-changed")
post_save.connect(forget_all, sender=settings.AUTH_USER_MODEL, dispatch_uid="hub-user-saved")
post_save.connect(forget_all, sender="auth.Group", dispatch_uid="hub-group-saved")
