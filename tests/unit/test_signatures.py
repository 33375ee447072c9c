"""X-Hub-Signature (WebSub §7.1) and the headers of a delivery, from subscriptions/delivery.py."""

import hashlib
import hmac

import pytest

from subscriptions import delivery

HEADER_ARGS = {
    "content_type": "application/atom+xml; charset=utf-8",
    "hub_url": "https://hub.example/hub",
    "topic": "https://example.com/feed",
    "delivery_id": "0b7c6f1e-7d55-4a55-9b0e-7f3c1e2a9d10",
    "body": b"<feed/>",
    "algorithm": "sha256",
}


def test_sha1_signature_matches_the_spec_known_answer():
    assert delivery.signature("secrat", b"mydatahere", "sha1") == "sha1=d95abcea4b2a8b0219da7cb04c261639a7bd8c94"


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha384", "sha512"])
def test_signature_is_lowercase_hex_hmac_of_the_body(algorithm):
    body = b"\x00\xffbinary body\r\n"
    expected = hmac.new(b"s3cr3t", body, getattr(hashlib, algorithm)).hexdigest()
    assert delivery.signature("s3cr3t", body, algorithm) == f"{algorithm}={expected}"
    assert expected == expected.lower()


def test_signature_key_is_the_secret_encoded_as_utf8():
    expected = hmac.new("clé-ü".encode(), b"body", hashlib.sha256).hexdigest()
    assert delivery.signature("clé-ü", b"body", "sha256") == f"sha256={expected}"


def test_signature_of_empty_body_is_defined():
    expected = hmac.new(b"k", b"", hashlib.sha1).hexdigest()
    assert delivery.signature("k", b"", "sha1") == f"sha1={expected}"


@pytest.mark.parametrize("algorithm", ["md5", "SHA1", "sha224", "", "sha3_256"])
def test_signature_with_unsupported_algorithm_raises(algorithm):
    with pytest.raises(ValueError, match="unsupported signature algorithm"):
        delivery.signature("k", b"body", algorithm)


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha384", "sha512"])
def test_signature_valid_accepts_the_right_signature(algorithm):
    header = delivery.signature("secrat", b"mydatahere", algorithm)
    assert delivery.signature_valid("secrat", b"mydatahere", header)


def test_signature_valid_accepts_the_spec_known_answer():
    assert delivery.signature_valid("secrat", b"mydatahere", "sha1=d95abcea4b2a8b0219da7cb04c261639a7bd8c94")


def test_signature_valid_rejects_a_wrong_secret():
    header = delivery.signature("secrat", b"mydatahere", "sha256")
    assert not delivery.signature_valid("other", b"mydatahere", header)


def test_signature_valid_rejects_a_changed_body():
    header = delivery.signature("secrat", b"mydatahere", "sha256")
    assert not delivery.signature_valid("secrat", b"mydatahere!", header)


def test_signature_valid_rejects_a_digest_under_another_algorithm_label():
    digest = delivery.signature("secrat", b"mydatahere", "sha1").partition("=")[2]
    assert not delivery.signature_valid("secrat", b"mydatahere", f"sha256={digest}")


def test_signature_valid_rejects_uppercase_hex():
    header = delivery.signature("secrat", b"mydatahere", "sha1")
    assert not delivery.signature_valid("secrat", b"mydatahere", header.upper())


@pytest.mark.parametrize(
    "header",
    [
        "",
        "=",
        "sha1",
        "sha1=",
        "md5=d95abcea4b2a8b0219da7cb04c261639a7bd8c94",
        "d95abcea4b2a8b0219da7cb04c261639a7bd8c94",
        " sha1=d95abcea4b2a8b0219da7cb04c261639a7bd8c94",
        "sha1=d95abcea4b2a8b0219da7cb04c261639a7bd8c94 ",
        "sha1=d95abcea4b2a8b0219da7cb04c261639a7bd8c9",
    ],
)
def test_signature_valid_rejects_malformed_headers(header):
    assert not delivery.signature_valid("secrat", b"mydatahere", header)


def test_signature_valid_rejects_non_ascii_header_without_raising():
    # An attacker controls the header: a non-ASCII one must be a plain "no", never a TypeError.
    assert not delivery.signature_valid("secrat", b"mydatahere", "sha1=é95abcea4b2a8b0219da7cb04c261639a7bd8c94")


def test_signature_valid_compares_in_constant_time(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def recording(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(delivery.hmac, "compare_digest", recording)
    header = delivery.signature("secrat", b"mydatahere", "sha1")
    assert delivery.signature_valid("secrat", b"mydatahere", header)
    assert not delivery.signature_valid("secrat", b"mydatahere", "sha1=" + "0" * 40)
    assert len(calls) == 2


def test_headers_without_secret_have_no_signature():
    out = delivery.headers(**HEADER_ARGS, secret="")
    assert "X-Hub-Signature" not in out
    assert not any(name.lower() == "x-hub-signature" for name in out)


def test_headers_with_secret_carry_the_signature_of_the_body():
    out = delivery.headers(**HEADER_ARGS, secret="s3cr3t")
    assert out["X-Hub-Signature"] == delivery.signature("s3cr3t", b"<feed/>", "sha256")


@pytest.mark.parametrize("algorithm", ["sha1", "sha384", "sha512"])
def test_headers_sign_with_the_configured_algorithm(algorithm):
    out = delivery.headers(**{**HEADER_ARGS, "algorithm": algorithm}, secret="s3cr3t")
    assert out["X-Hub-Signature"].startswith(f"{algorithm}=")
    assert delivery.signature_valid("s3cr3t", b"<feed/>", out["X-Hub-Signature"])


def test_headers_copy_the_content_type_verbatim():
    out = delivery.headers(**HEADER_ARGS, secret="")
    assert out["Content-Type"] == "application/atom+xml; charset=utf-8"


def test_headers_carry_the_delivery_id():
    out = delivery.headers(**HEADER_ARGS, secret="")
    assert out[delivery.DELIVERY_ID_HEADER] == HEADER_ARGS["delivery_id"]
    assert delivery.DELIVERY_ID_HEADER == "X-Hub-Delivery"


def test_headers_link_has_hub_and_exactly_one_self_in_spec_form():
    out = delivery.headers(**HEADER_ARGS, secret="")
    assert out["Link"] == '<https://hub.example/hub>; rel="hub", <https://example.com/feed>; rel="self"'
    assert out["Link"].count('rel="self"') == 1


def test_link_header_exact_form_for_a_dotted_topic():
    assert (
        delivery.link_header("http://127.0.0.1:8000/hub", "UN.CEFACT.TRADE")
        == '<http://127.0.0.1:8000/hub>; rel="hub", <UN.CEFACT.TRADE>; rel="self"'
    )


def test_headers_are_exactly_the_expected_set():
    assert set(delivery.headers(**HEADER_ARGS, secret="")) == {"Content-Type", "Link", "X-Hub-Delivery"}
    assert set(delivery.headers(**HEADER_ARGS, secret="k")) == {
        "Content-Type",
        "Link",
        "X-Hub-Delivery",
        "X-Hub-Signature",
    }
