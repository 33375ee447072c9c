"""Optional Standard Webhooks headers (per subscription), and the subscriber-side check."""

import base64
import hashlib
import hmac
from datetime import timedelta

import pytest
from django.utils import timezone

from subscriptions import delivery
from subscriptions.models import Delivery, Notification, Subscription
from subscriptions.topics import subscription_key
from tests.support.auth import api_client
from tests.support.subscriber import Subscriber, wait_until
from websubhub.client import verify_standard_webhook

BODY = b'{"hello":"world"}'


def _headers(secret: str, *, timestamp: int = 1_700_000_000) -> dict[str, str]:
    return delivery.headers(
        content_type="application/json",
        hub_url="https://hub.example/hub",
        topic="a.b",
        delivery_id="msg_2b1c",
        body=BODY,
        secret=secret,
        algorithm="sha256",
        standard_webhooks=True,
        timestamp=timestamp,
    )


def test_headers_follow_the_standard_webhooks_signing_scheme() -> None:
    headers = _headers("s3cret")
    assert headers["webhook-id"] == "msg_2b1c"
    assert headers["webhook-timestamp"] == "1700000000"
    expected = hmac.new(b"s3cret", b"msg_2b1c.1700000000." + BODY, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(expected).decode()
    # The WebSub signature is still there.
    assert headers["X-Hub-Signature"].startswith("sha256=")


def test_whsec_secret_is_base64_decoded_into_the_key() -> None:
    key = b"\x00\x01binary-key\xff"
    secret = "whsec_" + base64.b64encode(key).decode()
    headers = _headers(secret)
    expected = hmac.new(key, b"msg_2b1c.1700000000." + BODY, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(expected).decode()


def test_without_a_secret_only_id_and_timestamp_are_sent() -> None:
    headers = _headers("")
    assert "webhook-signature" not in headers and "X-Hub-Signature" not in headers
    assert headers["webhook-id"] == "msg_2b1c"


def test_off_by_default() -> None:
    headers = delivery.headers(
        content_type="text/plain", hub_url="h", topic="t", delivery_id="d", body=b"", secret="s", algorithm="sha1"
    )
    assert not any(name.startswith("webhook-") for name in headers)


@pytest.mark.parametrize("secret", ["s3cret", "whsec_" + base64.b64encode(b"k" * 24).decode()])
def test_subscriber_helper_accepts_a_genuine_delivery(secret: str) -> None:
    assert verify_standard_webhook(secret, BODY, _headers(secret), now=1_700_000_010)


def test_subscriber_helper_refuses_tampering_replay_and_missing_headers() -> None:
    headers = _headers("s3cret")
    assert not verify_standard_webhook("s3cret", BODY + b" ", headers, now=1_700_000_010)
    assert not verify_standard_webhook("other", BODY, headers, now=1_700_000_010)
    assert not verify_standard_webhook("s3cret", BODY, headers, now=1_700_000_000 + 301)
    assert not verify_standard_webhook("s3cret", BODY, {**headers, "webhook-id": "msg_other"}, now=1_700_000_010)
    assert not verify_standard_webhook("s3cret", BODY, {"webhook-id": "x"}, now=1_700_000_010)
    assert not verify_standard_webhook("s3cret", BODY, {**headers, "webhook-signature": "v1,é"}, now=1_700_000_010)
    # Several signatures (key rotation): one good one suffices, header names in any case.
    rotated = {k.upper(): v for k, v in headers.items()}
    rotated["WEBHOOK-SIGNATURE"] = "v1,bm9wZQ== " + headers["webhook-signature"]
    assert verify_standard_webhook("s3cret", BODY, rotated, now=1_700_000_010)


@pytest.mark.e2e
def test_operator_switches_standard_webhooks_on_through_the_api_and_deliveries_carry_them(
    hub, subscriber: Subscriber
) -> None:
    now = timezone.now()
    subscription = Subscription.objects.create(
        topic="std.events",
        topic_key=subscription_key("std.events"),
        callback=subscriber.url("/std"),
        secret="s3cret",
        lease_seconds=3600,
        verified_at=now,
        expires_at=now + timedelta(hours=1),
    )
    client = api_client()
    response = client.patch(
        f"/api/subscriptions/{subscription.pk}/", {"standard_webhooks": True}, content_type="application/json"
    )
    assert response.status_code == 200 and response.json()["standard_webhooks"] is True
    client.post("/api/notifications/", {"topic": "std.events", "content": {"n": 1}}, content_type="application/json")
    (got,) = wait_until(lambda: subscriber.deliveries("/std"))
    assert verify_standard_webhook("s3cret", got.body, got.headers)
    assert got.headers["webhook-id"] == str(Delivery.objects.get().uuid) == got.headers["X-Hub-Delivery"]
    assert Notification.objects.count() == 1
