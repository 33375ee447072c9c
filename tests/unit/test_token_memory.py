"""API tokens and permissions are remembered per process for HUB_TOKEN_CACHE_SECONDS, and forgotten at once when
they change in the process, so a revoked token or a withdrawn permission never outlives that time."""

import uuid

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

pytestmark = pytest.mark.django_db


def _publisher() -> tuple[User, Token]:
    user = User.objects.create_user("publisher-" + uuid.uuid4().hex[:8])
    user.user_permissions.add(Permission.objects.get(codename="publish_notification"))
    return user, Token.objects.create(user=user)


def _publish(token: Token) -> int:
    response = Client().post(
        "/api/notifications/",
        {"topic": "memory.test", "content": {"n": 1}},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Token {token.key}",
    )
    return response.status_code


def test_a_publisher_token_and_its_permission_are_looked_up_once_then_remembered(no_broker, settings) -> None:
    settings.HUB_TOKEN_CACHE_SECONDS = 60
    _, token = _publisher()
    with CaptureQueriesContext(connection) as first:
        assert _publish(token) == 202
    with CaptureQueriesContext(connection) as second:
        assert _publish(token) == 202
    # the token with its user and the permission set: two queries fewer on every later publish
    assert len(first) - len(second) == 2, ([q["sql"] for q in first], [q["sql"] for q in second])


def test_a_deleted_token_is_refused_at_once(no_broker, settings) -> None:
    settings.HUB_TOKEN_CACHE_SECONDS = 60
    _, token = _publisher()
    assert _publish(token) == 202
    Token.objects.filter(pk=token.pk).delete()  # a queryset delete sends post_delete per row
    assert _publish(token) == 401


def test_a_withdrawn_permission_and_a_deactivated_user_are_refused_at_once(no_broker, settings) -> None:
    settings.HUB_TOKEN_CACHE_SECONDS = 60
    user, token = _publisher()
    assert _publish(token) == 202
    user.user_permissions.clear()
    assert _publish(token) == 403
    user.user_permissions.add(Permission.objects.get(codename="publish_notification"))
    assert _publish(token) == 202
    user.is_active = False
    user.save()
    assert _publish(token) == 401


def test_with_the_memory_off_every_request_looks_the_token_up(no_broker, settings) -> None:
    settings.HUB_TOKEN_CACHE_SECONDS = 0
    _, token = _publisher()
    _publish(token)
    with CaptureQueriesContext(connection) as queries:
        assert _publish(token) == 202
    assert any("authtoken_token" in q["sql"] for q in queries)
