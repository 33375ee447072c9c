"""The subscriber-side helpers in websubhub/client.py: signatures, verification answers, Link headers."""

import hashlib
import hmac
from urllib.parse import parse_qs

import pytest

from subscriptions import delivery
from websubhub.client import challenge_response, parse_link_header, verify_signature

KNOWN_SHA1 = "sha1=d95abcea4b2a8b0219da7cb04c261639a7bd8c94"  # HMAC-SHA1, key "secrat", body "mydatahere"


# --- verify_signature ---------------------------------------------------------------


def test_known_answer_sha1_signature_is_valid():
    assert verify_signature("secrat", b"mydatahere", KNOWN_SHA1)


def test_secret_may_be_bytes():
    assert verify_signature(b"secrat", b"mydatahere", KNOWN_SHA1)


def test_tampered_body_is_refused():
    assert not verify_signature("secrat", b"mydatahere!", KNOWN_SHA1)


def test_wrong_secret_is_refused():
    assert not verify_signature("secret", b"mydatahere", KNOWN_SHA1)


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha384", "sha512"])
def test_every_websub_algorithm_signed_by_the_hub_verifies(algorithm):
    body = b'\x00\xff{"id":42}\r\n'
    header = delivery.signature("clé", body, algorithm)
    assert verify_signature("clé", body, header)
    assert not verify_signature("clé", body + b" ", header)


def test_digest_of_another_algorithm_under_a_valid_name_is_refused():
    sha256_digest = hmac.new(b"secrat", b"mydatahere", hashlib.sha256).hexdigest()
    assert not verify_signature("secrat", b"mydatahere", f"sha1={sha256_digest}")
    assert not verify_signature("secrat", b"mydatahere", f"sha512={sha256_digest}")


@pytest.mark.parametrize("name", ["md5", "sha224", "SHA-1", "sha3_256", "", "blake2b"])
def test_unknown_algorithm_is_refused(name):
    digest = hmac.new(b"secrat", b"mydatahere", hashlib.sha1).hexdigest()
    assert not verify_signature("secrat", b"mydatahere", f"{name}={digest}")


def test_algorithm_name_and_hex_case_are_not_significant():
    assert verify_signature("secrat", b"mydatahere", KNOWN_SHA1.upper())


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha1",
        "sha1=",
        "d95abcea4b2a8b0219da7cb04c261639a7bd8c94",
        "sha1=d95abcea4b2a8b0219da7cb04c261639a7bd8c9",  # one digit short
        "sha1=d95abcea4b2a8b0219da7cb04c261639a7bd8c944",  # one digit long
        "sha1=z95abcea4b2a8b0219da7cb04c261639a7bd8c94",  # not hex
        "sha1=d95abcea4b2a8b0219da7cb04c261639a7bd8c94,sha256=00",
        "sha1==d95abcea4b2a8b0219da7cb04c261639a7bd8c94",
    ],
)
def test_missing_or_malformed_header_is_refused(header):
    assert verify_signature("secrat", b"mydatahere", header) is False


@pytest.mark.parametrize(
    "header",
    [
        "sha1=d95abcea4b2a8b0219da7cb04c261639a7bd8cé4",
        "sha1=d95abcea4b2a8b0219da7cb04c261639a7bd8c٩٤",  # Arabic-Indic digits
        "sh\u04301=d95abcea4b2a8b0219da7cb04c261639a7bd8c94",  # a Cyrillic a in the name
    ],
)
def test_non_ascii_header_is_refused_without_raising(header):
    assert verify_signature("secrat", b"mydatahere", header) is False


def test_empty_body_has_a_defined_signature():
    assert verify_signature("k", b"", delivery.signature("k", b"", "sha256"))


# --- challenge_response ---------------------------------------------------------------


def _query(text: str) -> dict[str, list[str]]:
    return parse_qs(text, keep_blank_values=True)


def test_expected_subscribe_echoes_the_challenge():
    query = _query("hub.mode=subscribe&hub.topic=UN.CEFACT&hub.challenge=abc-123&hub.lease_seconds=86400")
    assert challenge_response(query, expected_topic="UN.CEFACT") == (200, b"abc-123")


def test_plain_string_mapping_is_accepted():
    query = {"hub.mode": "subscribe", "hub.topic": "t", "hub.challenge": "c"}
    assert challenge_response(query) == (200, b"c")


def test_any_topic_is_confirmed_when_none_is_expected():
    assert challenge_response(_query("hub.mode=subscribe&hub.topic=other&hub.challenge=c")) == (200, b"c")


def test_subscribe_for_another_topic_is_not_confirmed():
    query = _query("hub.mode=subscribe&hub.topic=UN.CEFACTX&hub.challenge=c")
    assert challenge_response(query, expected_topic="UN.CEFACT") == (404, b"")


def test_unsubscribe_is_not_confirmed_unless_expected():
    query = _query("hub.mode=unsubscribe&hub.topic=t&hub.challenge=c")
    assert challenge_response(query) == (404, b"")
    assert challenge_response(query, expected_mode=("subscribe", "unsubscribe")) == (200, b"c")
    assert challenge_response(query, expected_mode="unsubscribe") == (200, b"c")


def test_subscribe_is_not_confirmed_when_only_unsubscribe_is_expected():
    query = _query("hub.mode=subscribe&hub.topic=t&hub.challenge=c")
    assert challenge_response(query, expected_mode="unsubscribe") == (404, b"")


def test_denied_is_acknowledged_with_an_empty_body():
    query = _query("hub.mode=denied&hub.topic=t&hub.reason=not+allowed")
    assert challenge_response(query, expected_topic="t") == (200, b"")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hub.mode=subscribe&hub.topic=t",  # no challenge
        "hub.mode=subscribe&hub.topic=t&hub.challenge=",  # empty challenge
        "hub.mode=subscribe&hub.challenge=c",  # no topic
        "hub.mode=publish&hub.topic=t&hub.challenge=c",
        "hub.mode=SUBSCRIBE&hub.topic=t&hub.challenge=c",
        "hub.mode=subscribe&hub.mode=unsubscribe&hub.topic=t&hub.challenge=c",
        "hub.mode=subscribe&hub.topic=t&hub.challenge=c&hub.challenge=d",
    ],
)
def test_unexpected_or_ambiguous_verification_gets_404(text):
    assert challenge_response(_query(text), expected_mode=("subscribe", "unsubscribe")) == (404, b"")


def test_non_ascii_challenge_is_echoed_as_utf8():
    query = {"hub.mode": "subscribe", "hub.topic": "t", "hub.challenge": "défi"}
    assert challenge_response(query) == (200, "défi".encode())


# --- parse_link_header -----------------------------------------------------------------


def test_the_hubs_own_link_header_gives_hub_and_self():
    value = delivery.link_header("http://127.0.0.1:8000/hub", "UN.CEFACT.TRADE.CO")
    assert parse_link_header(value) == {"hub": "http://127.0.0.1:8000/hub", "self": "UN.CEFACT.TRADE.CO"}


def test_missing_header_gives_no_links():
    assert parse_link_header(None) == {}
    assert parse_link_header("") == {}


def test_commas_and_semicolons_inside_targets_and_quotes_are_kept():
    value = '<https://ex.com/a,b;c?x=1>; rel="self"; title="one, two; three", <https://hub.ex/>; rel=hub'
    assert parse_link_header(value) == {"self": "https://ex.com/a,b;c?x=1", "hub": "https://hub.ex/"}


def test_relation_lists_case_and_repeated_headers():
    values = ['<https://a/>; REL="Hub Self"', '<https://b/>; rel="hub"; rel="next"']
    assert parse_link_header(values) == {"hub": "https://a/", "self": "https://a/"}


def test_first_link_of_a_relation_wins_and_links_without_rel_are_skipped():
    value = '<https://x/>; title="no rel", <https://hub1/>; rel="hub", <https://hub2/>; rel="hub"'
    assert parse_link_header(value) == {"hub": "https://hub1/"}


@pytest.mark.parametrize("value", ["garbage", "<unterminated; rel=hub", "<>; rel=hub", "; rel=hub"])
def test_malformed_header_gives_no_links_without_raising(value):
    assert parse_link_header(value) == {}


def test_escaped_quotes_in_parameters():
    value = r'<https://a/>; title="say \"hi\", ok"; rel="hub"'
    assert parse_link_header(value) == {"hub": "https://a/"}
