"""The admin login locks a username out from one client address after too many wrong passwords (django-axes)."""

import os
import subprocess
import sys
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from tests.support.auth import api_client

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
LOGIN = "/admin/login/"
PASSWORD = "the-right-password-4711"
WRONG_PASSWORDS = 25
LOCKOUT_TEXT = "too many login attempts"


@pytest.fixture(autouse=True)
def operator() -> None:
    get_user_model().objects.create_superuser("operator", "operator@example.org", PASSWORD)


def _login(client: Client, password: str, *, username: str = "operator", **headers: str) -> object:
    return client.post(f"{LOGIN}?next=/admin/", {"username": username, "password": password}, **headers)


def _logged_in(response: object) -> bool:
    return response.status_code == 302 and response["Location"] == "/admin/"


def test_wrong_passwords_lock_the_username_out_from_that_address_even_with_the_right_password(settings) -> None:
    limit = settings.AXES_FAILURE_LIMIT
    assert limit == settings.HUB_LOGIN_FAILURE_LIMIT == 5
    client = Client(REMOTE_ADDR="203.0.113.5")

    # when 25 wrong passwords arrive in a row
    responses = [_login(client, f"wrong-{n}") for n in range(WRONG_PASSWORDS)]

    # then the first limit - 1 get the login form again, and from the limit on the answer is a lockout
    assert [r.status_code for r in responses] == [200] * (limit - 1) + [429] * (WRONG_PASSWORDS - limit + 1)
    assert LOCKOUT_TEXT in responses[-1].content.decode()
    # and the right password is refused while locked
    locked = _login(client, PASSWORD)
    assert locked.status_code == 429 and LOCKOUT_TEXT in locked.content.decode()
    assert client.get("/admin/").status_code == 302  # not logged in


def test_the_lockout_is_per_username_and_address(settings) -> None:
    attacker = Client(REMOTE_ADDR="203.0.113.5")
    for n in range(settings.AXES_FAILURE_LIMIT):
        _login(attacker, f"wrong-{n}")
    assert _login(attacker, PASSWORD).status_code == 429

    # The operator, elsewhere, still logs in; another username from the attacker's address is not locked.
    assert _logged_in(_login(Client(REMOTE_ADDR="198.51.100.20"), PASSWORD))
    get_user_model().objects.create_superuser("second", "second@example.org", PASSWORD)
    assert _logged_in(_login(attacker, PASSWORD, username="second"))


def test_changing_the_user_agent_does_not_reset_the_count(settings, caplog) -> None:
    client = Client(REMOTE_ADDR="203.0.113.5")
    for n in range(settings.AXES_FAILURE_LIMIT):
        _login(client, f"wrong-{n}", HTTP_USER_AGENT=f"agent-{n}")

    assert _login(client, PASSWORD, HTTP_USER_AGENT="a-fresh-agent").status_code == 429
    # Failures and the lockout are logged, never a password.
    assert "AXES: Locking out" in caplog.text
    assert "wrong-0" not in caplog.text and PASSWORD not in caplog.text


def test_a_successful_login_clears_the_count(settings) -> None:
    client = Client(REMOTE_ADDR="203.0.113.5")
    almost = settings.AXES_FAILURE_LIMIT - 1
    for n in range(almost):
        _login(client, f"wrong-{n}")
    assert _logged_in(_login(client, PASSWORD))
    client.logout()

    assert [_login(client, f"typo-{n}").status_code for n in range(almost)] == [200] * almost
    assert _logged_in(_login(client, PASSWORD))


def test_behind_proxies_the_lockout_reads_the_forwarded_client_address(settings) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    proxy = Client(REMOTE_ADDR="10.0.0.2")
    for n in range(settings.AXES_FAILURE_LIMIT):
        _login(proxy, f"wrong-{n}", HTTP_X_FORWARDED_FOR="203.0.113.5")

    assert _login(proxy, PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.5").status_code == 429
    assert _logged_in(_login(proxy, PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.20"))


def test_the_lockout_ends_after_the_cool_off_or_with_axes_reset(settings) -> None:
    client = Client(REMOTE_ADDR="203.0.113.5")
    for n in range(settings.AXES_FAILURE_LIMIT):
        _login(client, f"wrong-{n}")
    assert _login(client, PASSWORD).status_code == 429
    assert settings.AXES_COOLOFF_TIME == timedelta(minutes=settings.HUB_LOGIN_COOLOFF_MINUTES) == timedelta(minutes=15)

    # after the cool-off the right password works again
    AccessAttempt.objects.update(attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1))
    assert _logged_in(_login(client, PASSWORD))

    # and an operator can lift a lockout at once
    for n in range(settings.AXES_FAILURE_LIMIT):
        _login(Client(REMOTE_ADDR="203.0.113.6"), f"wrong-{n}")
    assert _login(Client(REMOTE_ADDR="203.0.113.6"), PASSWORD).status_code == 429
    out = StringIO()
    call_command("axes_reset", stdout=out)
    assert "attempts removed" in out.getvalue()
    assert _logged_in(_login(Client(REMOTE_ADDR="203.0.113.6"), PASSWORD))


def test_api_tokens_and_forced_logins_are_not_affected(settings) -> None:
    # given the operator locked out from the test client's address
    client = Client()
    for n in range(settings.AXES_FAILURE_LIMIT):
        _login(client, f"wrong-{n}")
    assert _login(client, PASSWORD).status_code == 429

    # then a token still reaches the API and a session made without a password still opens the admin
    assert api_client().get("/api/subscriptions/").status_code == 200
    client.force_login(get_user_model().objects.get(username="operator"))
    assert client.get("/admin/").status_code == 200


def _settings_of(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "HUB_"))}
    env = {**base, "DJANGO_SECRET_KEY": "s" * 50, "HUB_VAR_DIR": os.environ.get("HUB_VAR_DIR", "var"), **env}
    code = "from django.conf import settings as s; print(s.AXES_FAILURE_LIMIT, s.AXES_COOLOFF_TIME)"
    command = [sys.executable, "manage.py", "shell", "--no-imports", "-c", code]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_limit_and_cool_off_come_from_the_environment() -> None:
    result = _settings_of({"HUB_LOGIN_FAILURE_LIMIT": "3", "HUB_LOGIN_COOLOFF_MINUTES": "0"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["3", "None"]  # 0: locked until axes_reset

    refused = _settings_of({"HUB_LOGIN_FAILURE_LIMIT": "0"})
    assert refused.returncode != 0 and "HUB_LOGIN_FAILURE_LIMIT" in refused.stderr
