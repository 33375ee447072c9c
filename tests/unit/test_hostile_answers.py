"""A subscriber's answer can never break the record of an attempt: odd bodies, absurd Retry-After, crashes."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.db import DataError

from subscriptions import delivery, services
from subscriptions.delivery import RETRY_AFTER_CEILING_SECONDS, Outcome, classify, retry_after_seconds, storable_text
from subscriptions.models import Delivery, DeliveryAttempt, Subscription
from subscriptions.services import delivering
from tests.support.factories import DeliveryFactory, SubscriptionFactory
from tests.support.subscriber import Answer, Subscriber

NOW = datetime(2026, 1, 1, tzinfo=UTC)


# --- Pure: what is kept of an answer ------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        (b"oops\x00nul", "oops\ufffdnul"),
        (b"a\x01b\x1bc\x7fd", "a\ufffdb\ufffdc\ufffdd"),
        (b"line 1\nline 2\ttab\r\n", "line 1\nline 2\ttab"),
        (b"\xff\xfe bad utf-8", "\ufffd\ufffd bad utf-8"),
        ("lone \ud800 surrogate", "lone ? surrogate"),
        (b"  plain  ", "plain"),
    ],
)
def test_storable_text_holds_nothing_the_database_or_a_log_cannot(raw, kept) -> None:
    assert storable_text(raw, 100) == kept


def test_storable_text_is_cut_to_the_limit() -> None:
    assert storable_text(b"x" * 50, 10) == "x" * 10


def test_classify_keeps_no_nul_of_a_failing_answer() -> None:
    result = classify(500, "boom\x00")
    assert "\x00" not in result.error and "\x00" not in result.body
    assert result.error == "HTTP 500: boom\ufffd"


# --- Pure: Retry-After ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("00030", 30.0),
        ("9" * 400, float(RETRY_AFTER_CEILING_SECONDS)),
        ("9" * 5000, float(RETRY_AFTER_CEILING_SECONDS)),
        ("0" * 400 + "5", 5.0),
        (str(RETRY_AFTER_CEILING_SECONDS + 1), float(RETRY_AFTER_CEILING_SECONDS)),
        ("Thu, 01 Jan 2026 00:01:00 GMT", 60.0),
        ("Wed, 31 Dec 2025 00:00:00 GMT", 0.0),
        ("Fri, 31 Dec 9999 23:59:59 GMT", float(RETRY_AFTER_CEILING_SECONDS)),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("\u0661\u0662", None),  # Arabic-Indic digits are not HTTP digits
        ("Thu, 01 Jan 99999 00:00:00 GMT", None),
    ],
)
def test_retry_after_is_read_defensively(value, seconds) -> None:
    assert retry_after_seconds(value, now=NOW) == seconds


def test_a_429_with_a_400_digit_retry_after_is_a_retry_at_the_ceiling() -> None:
    result = classify(429, "", "9" * 400)
    assert result.outcome is Outcome.RETRY
    assert result.retry_after == RETRY_AFTER_CEILING_SECONDS


# --- An attempt is always recorded ------------------------------------------------------


@pytest.fixture
def pending(subscriber: Subscriber, settings) -> Delivery:
    settings.HUB_CALLBACK_RATE_LIMIT = "off"
    return DeliveryFactory(subscription=SubscriptionFactory(callback=subscriber.url("/hook")))


@pytest.mark.django_db
def test_a_500_whose_body_holds_a_nul_is_recorded_as_a_failed_attempt(
    subscriber: Subscriber, pending: Delivery
) -> None:
    subscriber.post_statuses["/hook"] = [Answer(status=500, body=b"database said \x00 no")]
    resend = services.delivery_attempt(delivery_id=pending.pk)
    assert resend is not None and resend.attempted
    (attempt,) = DeliveryAttempt.objects.filter(delivery_id=pending.pk)
    assert (attempt.number, attempt.status_code) == (1, 500)
    assert attempt.response_body == "database said \ufffd no"
    row = Delivery.objects.get(pk=pending.pk)
    assert (row.status, row.attempts) == (Delivery.Status.PENDING, 1)
    assert row.last_error == "HTTP 500: database said \ufffd no"


@pytest.mark.django_db
def test_a_429_with_a_400_digit_retry_after_waits_the_configured_cap(
    subscriber: Subscriber, pending: Delivery, settings
) -> None:
    settings.HUB_RETRY_AFTER_MAX = 30
    subscriber.post_statuses["/hook"] = [Answer(status=429, headers={"Retry-After": "9" * 400})]
    step = services.delivery_attempt(delivery_id=pending.pk)
    assert step is not None and step.attempted
    assert step.countdown == 30
    assert Delivery.objects.get(pk=pending.pk).attempts == 1
    assert DeliveryAttempt.objects.get(delivery_id=pending.pk).status_code == 429


@pytest.mark.django_db
def test_an_unexpected_error_while_sending_counts_as_a_failed_attempt(pending: Delivery, monkeypatch) -> None:
    def broken_post(*args, **kwargs):
        raise RuntimeError("a bug, not the subscriber")

    monkeypatch.setattr(delivery, "post", broken_post)
    resend = services.delivery_attempt(delivery_id=pending.pk)
    assert resend is not None and resend.attempted
    row = Delivery.objects.get(pk=pending.pk)
    assert (row.attempts, row.last_error) == (1, "internal error: RuntimeError")
    assert DeliveryAttempt.objects.get(delivery_id=pending.pk).error == "internal error"
    assert Subscription.objects.get(pk=pending.subscription_id).consecutive_failures == 1


@pytest.mark.django_db
def test_an_answer_the_database_refuses_still_counts_as_a_failed_attempt(
    subscriber: Subscriber, pending: Delivery, monkeypatch
) -> None:
    # given an answer whose record the database refuses once (as a NUL did)
    subscriber.post_statuses["/hook"] = [Answer(status=500, body=b"bad")]
    write = delivering._outcome_write
    calls = []

    def refuse_first(*args, **fields):
        calls.append(fields)
        if len(calls) == 1:
            raise DataError("invalid byte sequence")
        return write(*args, **fields)

    monkeypatch.setattr(delivering, "_outcome_write", refuse_first)
    # when the attempt is made
    resend = services.delivery_attempt(delivery_id=pending.pk)
    assert resend is not None and resend.attempted
    # then a bare failed attempt is recorded instead, and the delivery waits for its retry
    (attempt,) = DeliveryAttempt.objects.filter(delivery_id=pending.pk)
    assert (attempt.status_code, attempt.error, attempt.response_body) == (500, "internal error", "")
    row = Delivery.objects.get(pk=pending.pk)
    assert (row.status, row.attempts, row.last_error) == (Delivery.Status.PENDING, 1, "internal error: DataError")


# --- Topics that would add to the Link header, at the edges -----------------------------------

LINK_BREAKING_TOPIC = 'LNK.A>;rel="self",<LNK.B'


@pytest.mark.django_db
def test_subscribe_to_a_topic_that_would_add_to_the_link_header_is_a_400_saying_why(client) -> None:
    body = urlencode(
        {"hub.mode": "subscribe", "hub.topic": LINK_BREAKING_TOPIC, "hub.callback": "https://sub.example/cb"}
    )
    response = client.post("/hub", body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400
    assert b"must be percent-encoded" in response.content


@pytest.mark.django_db
@pytest.mark.parametrize("topic", [LINK_BREAKING_TOPIC, 'https://pub.example/feed>;rel="self"'])
def test_publishing_a_topic_that_would_add_to_the_link_header_is_a_400_saying_why(client, topic) -> None:
    response = client.post(
        "/api/notifications/", json.dumps({"topic": topic, "content": {}}), content_type="application/json"
    )
    assert response.status_code == 400
    assert b"must be percent-encoded" in response.content
    ping = urlencode({"hub.mode": "publish", "hub.url": topic})
    response = client.post("/hub", ping, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400
    assert b"must be percent-encoded" in response.content


# --- The setting -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_total_timeout_that_is_not_positive_stops_the_hub_from_starting(value) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_HTTP_")}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=Path(__file__).resolve().parents[2],
        env={**env, "HUB_HTTP_TOTAL_TIMEOUT": value},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "HUB_HTTP_TOTAL_TIMEOUT must be > 0" in result.stderr


@pytest.mark.django_db(transaction=True)
def test_a_delivery_erased_while_its_post_is_in_flight_ends_quietly(pending: Delivery, monkeypatch) -> None:
    # given a delivery whose subscription's history is erased while the subscriber answers
    def erased_meanwhile(*args):
        Delivery.objects.filter(pk=pending.pk).delete()
        return delivery.Result(delivery.Outcome.DELIVERED, 204)

    monkeypatch.setattr(delivery, "post", erased_meanwhile)
    # when the attempt is recorded, then nothing is left to record, and the run ends without an error
    assert services.delivery_attempt(delivery_id=pending.pk) is None
    assert not DeliveryAttempt.objects.filter(delivery_id=pending.pk).exists()
