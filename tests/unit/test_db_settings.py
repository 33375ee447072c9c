"""The connection pool's settings are checked when the process starts, with a message saying what to fix."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/websubhub"


def _settings(**variables: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "websubhub.settings", "DATABASE_URL": POSTGRES_URL, **variables}
    for name in ("DATABASE_POOL_MAX_SIZE", "DATABASE_POOL_TIMEOUT", "DATABASE_CONN_MAX_AGE"):
        if name not in variables:
            env.pop(name, None)
    code = "import django; django.setup(); from django.conf import settings; print(settings.DATABASES['default'])"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_postgresql_gets_a_pool_of_four_connections_by_default() -> None:
    done = _settings()
    assert done.returncode == 0, done.stderr
    assert "'pool': {'min_size': 1, 'max_size': 4, 'timeout': 5.0}" in done.stdout
    assert "'CONN_MAX_AGE': 0" in done.stdout


def test_pool_size_zero_keeps_per_thread_connections() -> None:
    done = _settings(DATABASE_POOL_MAX_SIZE="0")
    assert done.returncode == 0, done.stderr
    assert "'pool'" not in done.stdout
    assert "'CONN_MAX_AGE': 60" in done.stdout


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"DATABASE_POOL_MAX_SIZE": "-1"}, "DATABASE_POOL_MAX_SIZE must be 0 (no pool) or a positive number"),
        ({"DATABASE_POOL_TIMEOUT": "0"}, "DATABASE_POOL_TIMEOUT must be a positive number of seconds"),
        ({"DATABASE_CONN_MAX_AGE": "60"}, "DATABASE_CONN_MAX_AGE must be 0 or unset while the connection pool is on"),
    ],
)
def test_bad_pool_settings_are_refused_at_startup(variables: dict[str, str], message: str) -> None:
    done = _settings(**variables)
    assert done.returncode != 0
    assert message in done.stderr
