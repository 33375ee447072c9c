"""The HUB_* settings: declared once (websubhub/hub_settings.py), checked at start, read through hub_settings."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.test import override_settings

from subscriptions import netguard, rules, services
from tasks import deliver as deliver_module  # registers hub.deliver with the app
from websubhub.celery import app as celery_app
from websubhub.hub_settings import InvalidSetting, declared, environment_value, hub_settings, read_environment
from websubhub.queues import TaskName

ROOT = Path(__file__).resolve().parents[2]


def _readme_section(title: str) -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index(f"\n## {title}\n")
    return readme[start : readme.index("\n## ", start + 1)]


# --- One list: the declaration, the README's table, .env.example and Django's settings agree ---------------


def test_every_declared_setting_has_a_row_in_the_readme_configuration_table_and_every_row_is_declared() -> None:
    rows = set(re.findall(r"^\| `(HUB_[A-Z_]+)` \|", _readme_section("Configuration"), re.MULTILINE))

    assert rows == set(declared())


def test_every_declared_setting_is_in_env_example_and_every_hub_variable_there_is_declared() -> None:
    listed = set(re.findall(r"^#? ?(HUB_[A-Z_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))

    assert listed == set(declared())


def test_django_settings_hold_exactly_the_declared_hub_settings() -> None:
    assert {name for name in dir(django_settings) if name.startswith("HUB_")} == set(declared())


def test_every_declaration_says_what_the_setting_means() -> None:
    assert [name for name, setting in declared().items() if not setting.doc.strip()] == []


# --- At start: a wrong value stops the process, naming the setting ------------------------------------------


def _check(**variables: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_") or k in ("HUB_VAR_DIR", "HUB_METRICS_DIR")}
    env.update(DJANGO_SETTINGS_MODULE="websubhub.settings", DJANGO_SECRET_KEY="s" * 50, **variables)
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"HUB_SWEEP_MAX_QUEUE": "many"}, "HUB_SWEEP_MAX_QUEUE must be a whole number (got 'many')"),
        ({"HUB_ALLOW_PRIVATE_ADDRESSES": "maybe"}, "HUB_ALLOW_PRIVATE_ADDRESSES must be true or false"),
        ({"HUB_CALLBACK_RATE_LIMIT": "5/x"}, "HUB_CALLBACK_RATE_LIMIT: rate limit must look like"),
        ({"HUB_THROTTLE_SUBSCRIBE": "lots"}, "HUB_THROTTLE_SUBSCRIBE: rate limit must look like"),
        ({"HUB_TOPIC_DENYLIST": "ok,broken("}, "HUB_TOPIC_DENYLIST must be regular expressions: 'broken(' is not one"),
        ({"HUB_ALLOWED_PORTS": "80,http"}, "HUB_ALLOWED_PORTS must list ports and port ranges"),
        ({"HUB_SIGNATURE_ALGORITHM": "md5"}, "HUB_SIGNATURE_ALGORITHM must be one of sha1, sha256, sha384, sha512"),
        ({"HUB_DELIVERY_RATE_LIMIT": "fast"}, 'HUB_DELIVERY_RATE_LIMIT must be a Celery rate such as "100/s"'),
        ({"HUB_LOG_LEVEL": "LOUD"}, "HUB_LOG_LEVEL must be a log level"),
        ({"HUB_WORKER_PROCESSES": "0"}, "HUB_WORKER_PROCESSES must be 1 or more (got '0')"),
        ({"HUB_CALLBACK_MAX_IN_FLIGHT": "-1"}, "HUB_CALLBACK_MAX_IN_FLIGHT must be 0 or more"),
        ({"HUB_ADMIN_ATTENTION_FAILURE_RATE": "100"}, "HUB_ADMIN_ATTENTION_FAILURE_RATE must be a percentage"),
        (
            {"HUB_LEASE_SECONDS_MIN": "600", "HUB_LEASE_SECONDS_DEFAULT": "60"},
            "need 0 < HUB_LEASE_SECONDS_MIN <= HUB_LEASE_SECONDS_DEFAULT <= HUB_LEASE_SECONDS_MAX",
        ),
    ],
)
def test_a_wrong_value_stops_the_process_at_start_naming_the_setting(variables: dict[str, str], message: str) -> None:
    done = _check(**variables)

    assert done.returncode != 0
    assert f"InvalidSetting: {message}" in done.stderr


def test_the_declared_defaults_start_the_hub() -> None:
    done = _check()

    assert done.returncode == 0, done.stderr


def test_defaults_that_follow_other_settings_follow_them() -> None:
    # given
    environment = {"HUB_MAX_CONTENT_BYTES": "1000", "HUB_HTTP_CONNECT_TIMEOUT": "2", "HUB_RETENTION_DAYS": "7"}

    # when
    values = read_environment(environment.get)

    # then
    assert values["HUB_MAX_REQUEST_BYTES"] == 2 * 1000 + 65_536
    assert values["HUB_HTTP_TOTAL_TIMEOUT"] == 2.0 + 10.0
    assert values["HUB_ATTEMPT_RETENTION_DAYS"] == 7
    assert values["HUB_METRICS_DIR"] == values["HUB_VAR_DIR"] / "metrics"


def test_values_are_read_as_django_environ_read_them() -> None:
    values = read_environment(
        {"HUB_ALLOW_PRIVATE_ADDRESSES": "on", "HUB_TOKEN_CACHE_SECONDS": "1,5", "HUB_DELIVERY_RATE_LIMIT": ""}.get
    )

    assert values["HUB_ALLOW_PRIVATE_ADDRESSES"] is True
    assert values["HUB_TOKEN_CACHE_SECONDS"] == 1.5
    assert values["HUB_DELIVERY_RATE_LIMIT"] is None


def test_gunicorn_reads_its_hub_settings_with_the_same_declarations() -> None:
    assert environment_value("HUB_WEB_THREADS", {}.get) == 4
    assert environment_value("HUB_VAR_DIR", {"HUB_VAR_DIR": "/srv/hub"}.get) == Path("/srv/hub")
    with pytest.raises(InvalidSetting, match="HUB_WEB_THREADS must be 1 or more"):
        environment_value("HUB_WEB_THREADS", {"HUB_WEB_THREADS": "0"}.get)


# --- At run time: override_settings reaches every reader ----------------------------------------------------


def test_override_settings_reaches_the_deliver_tasks_celery_rate_limit() -> None:
    deliver = celery_app.tasks[TaskName.DELIVER]
    assert isinstance(deliver, deliver_module.DeliverTask)
    assert deliver.rate_limit is None

    with override_settings(HUB_DELIVERY_RATE_LIMIT="10/s"):
        assert deliver.rate_limit == "10/s"

    assert deliver.rate_limit is None


def test_celery_control_can_still_set_the_deliver_tasks_rate_limit_for_a_worker() -> None:
    deliver = celery_app.tasks[TaskName.DELIVER]
    try:
        deliver.rate_limit = "5/m"  # what `celery control rate_limit hub.deliver 5/m` does in a worker
        assert deliver.rate_limit == "5/m"
    finally:
        del deliver.__dict__["_rate_limit_set"]
    assert deliver.rate_limit is None


def test_override_settings_reaches_the_lease_rule_and_the_address_guard(settings) -> None:
    settings.HUB_LEASE_SECONDS_MAX = 7_200
    settings.HUB_ALLOW_PRIVATE_ADDRESSES = False
    settings.HUB_ALLOWED_PORTS = "443"

    assert rules.lease_clamp(86_400) == 7_200
    assert netguard.allow_private_addresses() is False
    with pytest.raises(netguard.ForbiddenDestination, match="port 8080 is not allowed"):
        netguard.check_url_with_settings("https://93.184.215.14:8080/cb")


def test_override_settings_reaches_the_retry_schedule(settings) -> None:
    settings.HUB_RETRY_BACKOFF_BASE = 1
    settings.HUB_RETRY_BACKOFF_MAX = 3

    assert services.retry_delay_max(10) == 3.0


def test_an_override_in_the_environments_spelling_is_read_as_declared(settings) -> None:
    settings.HUB_RETRY_AFTER_MAX = "5"
    settings.HUB_TOPIC_DENYLIST = [r"^https://denied\.example/"]

    assert hub_settings.HUB_RETRY_AFTER_MAX == 5
    assert rules.topic_denied_reason("https://denied.example/feed")
    assert not rules.topic_denied_reason("https://fine.example/feed")


def test_a_wrong_override_is_refused_naming_the_setting(settings) -> None:
    settings.HUB_MAX_JSON_DEPTH = "deep"

    with pytest.raises(InvalidSetting, match="HUB_MAX_JSON_DEPTH must be a whole number"):
        _ = hub_settings.HUB_MAX_JSON_DEPTH


def test_a_setting_missing_from_djangos_settings_reads_as_its_default(settings) -> None:
    del settings.HUB_SWEEP_MAX_QUEUE
    del settings.HUB_MAX_REQUEST_BYTES
    settings.HUB_MAX_CONTENT_BYTES = 100

    assert hub_settings.HUB_SWEEP_MAX_QUEUE == 1_000
    assert hub_settings.HUB_MAX_REQUEST_BYTES == 2 * 100 + 65_536


def test_a_refused_secret_setting_is_named_but_its_value_is_never_repeated() -> None:
    # when
    with pytest.raises(InvalidSetting) as refused:
        read_environment({"HUB_OUTBOUND_PROXY": "socks5://hub:hunter2@proxy:1080"}.get)
    # then
    assert str(refused.value).startswith("HUB_OUTBOUND_PROXY")
    assert "hunter2" not in str(refused.value)
