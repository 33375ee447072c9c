"""Every decision about a URL (throttle key, log line, publish allow list) reads it as the outbound request will.

urlsplit and urllib3 disagree on URLs such as `http://127.0.0.1:18081\\@bypass1/ok`
(urlsplit: host bypass1; requests and urllib3: host 127.0.0.1, port 18081).
These tests use such URLs against the real /hub endpoint; nothing is fetched.
"""

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from subscriptions import netguard, throttles
from subscriptions.models import SubscriptionRequest
from subscriptions.services import events

# Tasks are recorded, not sent; throttle counters start at zero.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_broker", "fresh_cache")]

ROOT = Path(__file__).resolve().parents[2]
FORM = "application/x-www-form-urlencoded"
SETTING = "HUB_PUBLISH_ALLOWED_TOPICS"


def _subscribe(callback: str, address: str) -> int:
    body = urlencode({"hub.mode": "subscribe", "hub.topic": "a.b", "hub.callback": callback})
    return Client().post("/hub", body, content_type=FORM, REMOTE_ADDR=address).status_code


def _ping(topic: str) -> tuple[int, str]:
    body = urlencode({"hub.mode": "publish", "hub.url": topic})
    response = Client().post("/hub", body, content_type=FORM)
    return response.status_code, response.content.decode()


# --- The per-callback-host throttle -------------------------------------------------------------


def test_callback_host_throttle_counts_the_host_the_request_goes_to_not_the_one_urlsplit_reads(settings) -> None:
    # given a limit of two subscribe requests a minute per callback host
    settings.HUB_THROTTLE_SUBSCRIBE = "2/m"

    # when many addresses aim verification requests at 127.0.0.1:18081, each naming a different fake host
    statuses = [_subscribe(f"http://127.0.0.1:18081\\@bypass{n}/ok", f"198.51.100.{n}") for n in range(4)]

    # then they all count against 127.0.0.1
    assert statuses == [202, 202, 429, 429]
    assert SubscriptionRequest.objects.count() == 2


def test_callback_host_throttle_counts_every_spelling_of_an_address_as_one_host(settings) -> None:
    settings.HUB_THROTTLE_SUBSCRIBE = "3/m"
    spellings = [
        "http://127.0.0.1:18081/a",
        "http://2130706433:18081/b",  # decimal
        "http://0x7f.1:18081/c",  # hex, short form
        "http://[::ffff:127.0.0.1]:18081/d",  # IPv4-mapped IPv6
    ]

    statuses = [_subscribe(url, f"198.51.100.{n}") for n, url in enumerate(spellings)]

    assert statuses == [202, 202, 202, 429]


@pytest.mark.parametrize(
    ("callback", "host"),
    [
        ("http://127.0.0.1:18081\\@bypass1/ok", "127.0.0.1"),
        ("https://Victim.Example./cb", "victim.example"),
        ("https://user:pw@victim.example/cb", "victim.example"),
        ("https://bücher.example/cb", "xn--bcher-kva.example"),
        ("http://0177.0.0.1/", "127.0.0.1"),
        ("http://[2001:DB8::1]:8080/", "2001:db8::1"),
        ("http://[::ffff:7f00:1]/", "127.0.0.1"),
        ("ftp://victim.example/", ""),
        ("http:///no-host", ""),
        ("http://[not-ipv6]/", ""),
    ],
)
def test_callback_host_is_the_guards_reading_in_one_spelling(callback: str, host: str) -> None:
    assert throttles.callback_host(callback) == host


# --- Logs ------------------------------------------------------------------------------------------


def test_subscription_request_log_names_the_host_the_request_goes_to(caplog) -> None:
    caplog.set_level("INFO", logger="subscriptions.services")

    assert _subscribe("http://127.0.0.1:18081\\@bypass1/ok", "198.51.100.1") == 202

    lines = [r.getMessage() for r in caplog.records if "subscription request" in r.getMessage()]
    assert lines and all("callback_host=127.0.0.1" in line for line in lines), lines
    assert "bypass1" not in caplog.text


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://127.0.0.1:18081\\@bypass1/ok?token=s3cret", "127.0.0.1"),
        ("https://EXAMPLE.org/x", "example.org"),
        ("not a url", "?"),
        ("http://[broken/", "?"),
    ],
)
def test_log_and_event_host_is_the_guards_reading_and_never_the_query(url: str, host: str) -> None:
    assert events.callback_host(url) == host


# --- The publish allow list ---------------------------------------------------------------------------


def test_publish_ping_with_the_allowed_origin_as_user_info_is_refused(settings, no_broker) -> None:
    # given pings allowed for http://127.0.0.1:18080 only
    settings.HUB_PUBLISH_ALLOWED_TOPICS = ["http://127.0.0.1:18080"]

    # when a ping names a topic that starts with that text but is fetched from port 18081
    status, body = _ping("http://127.0.0.1:18080@127.0.0.1:18081/feed")

    # then it is refused and nothing is queued
    assert status == 403 and SETTING in body
    assert no_broker == []


def test_publish_ping_for_a_host_that_merely_starts_with_an_allowed_host_is_refused(settings, no_broker) -> None:
    settings.HUB_PUBLISH_ALLOWED_TOPICS = ["https://feeds.example.com"]

    for topic in (
        "https://feeds.example.com.attacker.net/",
        "https://feeds.example.com:8443/feed",
        "http://feeds.example.com/feed",
        "https://feeds.example.com\\@attacker.net/",
    ):
        status, _ = _ping(topic)
        # A backslash cannot stand unencoded in a topic (nor in the Link header): 400 before the allow-list
        # is asked. Either way nothing is fetched from attacker.net.
        expected = 400 if "\\" in topic else 403
        assert status == expected, topic
    assert no_broker == []


@pytest.mark.parametrize(
    "topic",
    [
        "http://127.0.0.1:18080/feed",
        "http://127.0.0.1:18080",
        "HTTP://127.0.0.1:18080/Feed?page=2",
        "https://feeds.example.com/",
        "https://FEEDS.example.com:443/a/b",
        "https://blog.example/news",
        "https://blog.example/news/",
        "https://blog.example/news/2026/post.xml",
    ],
)
def test_publish_ping_for_an_allowed_origin_and_path_is_accepted(settings, no_broker, topic: str) -> None:
    settings.HUB_PUBLISH_ALLOWED_TOPICS = [
        "http://127.0.0.1:18080",
        "https://feeds.example.com",
        "https://blog.example/news",
    ]

    status, body = _ping(topic)

    assert status == 202, body
    assert [name for name, _ in no_broker] == ["hub.fetch_topic"]


@pytest.mark.parametrize(
    "topic",
    [
        "https://blog.example/newsevil",
        "https://blog.example/",
        "https://blog.example/News/a",
        "https://blog.example/news/%2e%2e/admin",
        "https://blog.example/news%2F..%2Fadmin",
    ],
)
def test_publish_allow_list_matches_the_path_by_whole_segments(settings, no_broker, topic: str) -> None:
    settings.HUB_PUBLISH_ALLOWED_TOPICS = ["https://blog.example/news"]

    status, _ = _ping(topic)

    assert status == 403
    assert no_broker == []


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ("ftp://feeds.example.com/", "not an http:// or https:// URL"),
        ("feeds.example.com/news", "not an http:// or https:// URL"),
        ("https://", "not a valid URL"),
        ("https://user@feeds.example.com/", "user information"),
        ("https://feeds.example.com/?x=1", "query or fragment"),
        ("https://feeds.example.com/a/../b%2F..", "'.' or '..'"),
    ],
)
def test_a_bad_allow_list_entry_is_improperly_configured_naming_the_setting(entry: str, complaint: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=SETTING) as raised:
        netguard.url_prefixes([entry], setting=SETTING)
    assert complaint in str(raised.value)


def test_a_bad_allow_list_entry_stops_the_process_at_settings_load() -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "HUB_"))}
    env = {**base, "DJANGO_SECRET_KEY": "s" * 50, SETTING: "https://ok.example/,ftp://bad.example/"}
    env["HUB_VAR_DIR"] = os.environ.get("HUB_VAR_DIR", "var")

    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert f"{SETTING}: 'ftp://bad.example/' is not an http:// or https:// URL" in result.stderr


def test_the_allow_list_setting_holds_parsed_entries() -> None:
    parsed = netguard.url_prefixes(["https://Feeds.Example.com:443/news/", ""], setting=SETTING)

    assert [(p.scheme, p.host, p.port, p.segments) for p in parsed] == [("https", "feeds.example.com", 443, ("news",))]
    assert str(parsed[0]) == "https://Feeds.Example.com:443/news/"
    assert netguard.url_prefixes(parsed, setting=SETTING) == parsed
