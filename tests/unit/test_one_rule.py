"""Rules with one home: every other place that states them imports them, or is checked against them here."""

import re

import pytest
from django.db import connection

from subscriptions import delivery, netguard, ratelimit, selectors, throttles
from subscriptions.api import serializers
from subscriptions.models import Subscription
from tests.support.factories import SubscriptionFactory
from websubhub import client
from websubhub.hub_settings import InvalidSetting

# --- Rates -------------------------------------------------------------------------------------------

RATES = [
    "100/10s",
    "5/s",
    "30/m",
    "1/h",
    "2/d",
    "20/500ms",
    "1000/1m",
    "off",
    "OFF",
    "none",
    " None ",
    "",
    "0/s",
    "5",
    "5/",
    "/s",
    "5/x",
    "5/0s",
    "5/minute",
    "-1/s",
    "5/1.5s",
    "abc",
    "5/s/s",
    "1/1000000s",
]


@pytest.mark.parametrize("text", RATES)
def test_the_schema_rate_pattern_accepts_only_rates_the_parser_reads(text: str) -> None:
    if re.match(serializers.RATE_PATTERN, text):
        ratelimit.parse_rate(text)  # raises InvalidRate if the schema promised too much


def test_the_schema_rate_pattern_names_the_parsers_units() -> None:
    for unit in ratelimit.UNITS:
        assert re.match(serializers.RATE_PATTERN, f"5/{unit}")
        assert re.match(serializers.RATE_PATTERN, f"5/10{unit}")


@pytest.mark.parametrize("text", [*ratelimit.OFF_SPELLINGS, "OFF", " None "])
def test_a_throttle_reads_off_as_the_rate_limit_does(settings, text: str) -> None:
    settings.HUB_THROTTLE_SUBSCRIBE = text

    assert ratelimit.parse_rate(text) is None
    assert throttles.SubscribeByAddress().rate is None


def test_a_throttle_reads_its_rate_with_the_rate_limits_parser(settings) -> None:
    # "5/10s" is a rate the callback rate limit reads; DRF's own parser failed on it.
    settings.HUB_THROTTLE_PUBLISH = "5/10s"

    throttle = throttles.PublishByClient()

    assert (throttle.num_requests, throttle.duration) == (5, 10.0)


def test_a_throttle_refuses_a_rate_the_parser_refuses(settings) -> None:
    settings.HUB_THROTTLE_PUBLISH = "5/x"

    # The setting's declaration reads a rate with the rate limit's parser: its refusal, naming the setting.
    with pytest.raises(InvalidSetting, match=r"HUB_THROTTLE_PUBLISH: rate limit must look like"):
        throttles.PublishByClient()


# --- Signature algorithms and ports ------------------------------------------------------------------


def test_the_stdlib_client_knows_the_hubs_signature_algorithms() -> None:
    # websubhub/client.py is standard library only, copied by subscribers: it keeps its own list.
    assert tuple(client.SIGNATURE_ALGORITHMS) == delivery.SIGNATURE_ALGORITHMS


def test_the_schema_callback_pattern_allows_the_default_allowed_ports() -> None:
    port = re.compile(serializers._PORT + r"\Z")
    allowed = netguard.parse_ports(netguard.DEFAULT_ALLOWED_PORTS)
    schema = {n for n in range(1, netguard.MAX_PORT + 1) if port.match(f":{n}")}

    assert schema == {n for n in range(1, netguard.MAX_PORT + 1) if n in allowed}


# --- Row estimates -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_row_estimates_come_from_the_planner_on_postgresql_only() -> None:
    SubscriptionFactory.create_batch(3)

    estimate = selectors.estimated_rows(Subscription.objects.all())

    if connection.vendor == "postgresql":
        assert isinstance(estimate, int) and estimate >= 0
    else:
        assert estimate is None
