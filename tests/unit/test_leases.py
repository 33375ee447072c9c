"""Lease rules: how hub.lease_seconds is parsed and which lease is granted (services)."""

import pytest

from subscriptions.services import HubError, lease_clamp, lease_seconds_parse


@pytest.fixture
def lease_bounds(settings):
    settings.HUB_LEASE_SECONDS_DEFAULT = 1_000
    settings.HUB_LEASE_SECONDS_MIN = 100
    settings.HUB_LEASE_SECONDS_MAX = 10_000
    return settings


@pytest.mark.parametrize(("raw", "expected"), [("1", 1), ("3600", 3600), ("007", 7), (" 60 ", 60), ("60\n", 60)])
def test_lease_seconds_parse_accepts_a_positive_whole_number(raw, expected):
    assert lease_seconds_parse(raw) == expected


def test_lease_seconds_parse_accepts_a_huge_number_for_clamping_later():
    assert lease_seconds_parse("9" * 30) == int("9" * 30)


@pytest.mark.parametrize(
    "raw", ["0", "000", "-1", "-3600", "+60", "1.5", "60.0", "1e3", "abc", "", "  ", "0x10", "6 0"]
)
def test_lease_seconds_parse_refuses_anything_but_a_positive_whole_number(raw):
    with pytest.raises(HubError, match=r"hub\.lease_seconds must be a positive whole number of seconds") as exc_info:
        lease_seconds_parse(raw)
    assert exc_info.value.status == 400


@pytest.mark.parametrize("raw", ["\u0661\u0662", "\uff11\uff12", "\u00b2"])
def test_lease_seconds_parse_refuses_non_ascii_digits(raw):
    with pytest.raises(HubError, match="positive whole number"):
        lease_seconds_parse(raw)


def test_lease_seconds_parse_error_quotes_a_bounded_excerpt():
    with pytest.raises(HubError) as exc_info:
        lease_seconds_parse("x" * 1000)
    assert len(exc_info.value.message) < 200


def test_lease_clamp_gives_the_default_when_none_is_asked(lease_bounds):
    assert lease_clamp(None) == 1_000


def test_lease_clamp_keeps_a_lease_within_bounds(lease_bounds):
    assert lease_clamp(100) == 100
    assert lease_clamp(5_000) == 5_000
    assert lease_clamp(10_000) == 10_000


def test_lease_clamp_raises_a_short_lease_to_the_minimum(lease_bounds):
    assert lease_clamp(1) == 100
    assert lease_clamp(99) == 100


def test_lease_clamp_lowers_a_long_lease_to_the_maximum(lease_bounds):
    assert lease_clamp(10_001) == 10_000
    assert lease_clamp(10**30) == 10_000


def test_lease_clamp_never_grants_a_perpetual_lease(lease_bounds):
    assert lease_clamp(2**63) == lease_bounds.HUB_LEASE_SECONDS_MAX


def test_lease_clamp_follows_changed_settings(settings):
    settings.HUB_LEASE_SECONDS_DEFAULT = 42
    settings.HUB_LEASE_SECONDS_MIN = 10
    settings.HUB_LEASE_SECONDS_MAX = 50
    assert lease_clamp(None) == 42
    assert lease_clamp(5) == 10
    assert lease_clamp(60) == 50


def test_default_lease_settings_are_ordered(settings):
    assert settings.HUB_LEASE_SECONDS_MIN <= settings.HUB_LEASE_SECONDS_DEFAULT <= settings.HUB_LEASE_SECONDS_MAX
    assert settings.HUB_LEASE_SECONDS_MIN > 0
