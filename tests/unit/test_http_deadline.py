"""The total deadline on outbound requests (HUB_HTTP_TOTAL_TIMEOUT), against real dripping peers on 127.0.0.1.

Each peer sends a byte well within the read timeout, so only a wall-clock
deadline on the whole exchange ends the request.
"""

import time
from collections.abc import Iterator

import pytest

from subscriptions import delivery, http, services, verification
from subscriptions.models import Notification
from tests.support.dripping import DrippingServer
from tests.support.subscriber import Subscriber

TOTAL = 1.0
# What the deadline may overrun by: the watchdog's wake-up and the error's way up.
MARGIN = 0.75


@pytest.fixture(autouse=True)
def _short_deadline(settings) -> None:
    settings.HUB_HTTP_CONNECT_TIMEOUT = 2.0
    settings.HUB_HTTP_READ_TIMEOUT = 3.0
    settings.HUB_HTTP_TOTAL_TIMEOUT = TOTAL


@pytest.fixture
def dripping_headers() -> Iterator[DrippingServer]:
    server = DrippingServer(interval=0.1)
    yield server
    server.close()


@pytest.fixture
def dripping_body() -> Iterator[DrippingServer]:
    server = DrippingServer(interval=0.1, headers_first=True)
    yield server
    server.close()


def _timed(call, *args, **kwargs):
    started = time.monotonic()
    outcome = call(*args, **kwargs)
    return outcome, time.monotonic() - started


def test_verification_against_a_callback_dripping_its_status_line_ends_at_the_deadline(dripping_headers) -> None:
    answer, took = _timed(verification.verify, dripping_headers.url("/cb"), {"hub.mode": "subscribe"}, "challenge")
    assert not answer.ok
    assert "HUB_HTTP_TOTAL_TIMEOUT" in answer.reason
    assert took < TOTAL + MARGIN


def test_verification_against_a_callback_dripping_its_body_ends_at_the_deadline(dripping_body) -> None:
    answer, took = _timed(verification.verify, dripping_body.url("/cb"), {"hub.mode": "subscribe"}, "challenge")
    assert not answer.ok
    assert "HUB_HTTP_TOTAL_TIMEOUT" in answer.reason
    assert took < TOTAL + MARGIN


def test_denial_notice_to_a_dripping_callback_ends_at_the_deadline(dripping_headers) -> None:
    answer, took = _timed(verification.notify_denied, dripping_headers.url("/cb"), "UN.X", "not allowed")
    assert not answer.ok
    assert took < TOTAL + MARGIN


def test_delivery_to_a_callback_dripping_its_status_line_ends_at_the_deadline(dripping_headers) -> None:
    result, took = _timed(delivery.post, dripping_headers.url("/cb"), b"{}", {"Content-Type": "application/json"})
    assert result.outcome is delivery.Outcome.RETRY
    assert result.status_code is None
    assert result.error.startswith("timeout: no answer within HUB_HTTP_TOTAL_TIMEOUT")
    assert took < TOTAL + MARGIN


def test_delivery_to_a_callback_dripping_its_error_body_ends_at_the_deadline() -> None:
    server = DrippingServer(interval=0.1, headers_first=True)
    try:
        # the answer is a 200 whose body never ends: the excerpt read is cut too
        result, took = _timed(delivery.post, server.url("/cb"), b"{}", {"Content-Type": "application/json"})
    finally:
        server.close()
    assert result.outcome is delivery.Outcome.RETRY
    assert "HUB_HTTP_TOTAL_TIMEOUT" in result.error
    assert took < TOTAL + MARGIN


@pytest.mark.django_db
def test_topic_fetch_from_a_dripping_publisher_ends_at_the_deadline_and_publishes_nothing(dripping_body) -> None:
    # the body has no Content-Length: the part read before the cut must not pass for the whole
    started = time.monotonic()
    with pytest.raises(services.DeliveryFailed, match="HUB_HTTP_TOTAL_TIMEOUT"):
        services.topic_fetch_and_publish(topic=dripping_body.url("/feed"))
    assert time.monotonic() - started < TOTAL + MARGIN
    assert not Notification.objects.exists()


@pytest.mark.django_db
def test_topic_fetch_from_a_publisher_dripping_headers_ends_at_the_deadline(dripping_headers) -> None:
    started = time.monotonic()
    with pytest.raises(services.DeliveryFailed, match="HUB_HTTP_TOTAL_TIMEOUT"):
        services.topic_fetch_and_publish(topic=dripping_headers.url("/feed"))
    assert time.monotonic() - started < TOTAL + MARGIN


def test_delivery_to_an_https_callback_dripping_its_tls_handshake_ends_at_the_deadline() -> None:
    # a TLS record header announcing 16 kB of handshake, then one byte at a time
    server = DrippingServer(interval=0.1, body=b"\x16\x03\x03\x40\x00" + b"\x00" * 1000, raw=True)
    try:
        url = f"https://127.0.0.1:{server.port}/cb"
        result, took = _timed(delivery.post, url, b"{}", {"Content-Type": "application/json"})
    finally:
        server.close()
    assert result.outcome is delivery.Outcome.RETRY
    assert "HUB_HTTP_TOTAL_TIMEOUT" in result.error
    assert took < TOTAL + MARGIN


def test_the_hub_closes_its_side_of_a_dripping_connection_at_the_deadline(dripping_headers) -> None:
    delivery.post(dripping_headers.url("/cb"), b"{}", {})
    (connection,) = dripping_headers.connections
    deadline = time.monotonic() + 5
    while connection.closed is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert connection.closed is not None
    assert connection.closed - connection.opened < TOTAL + MARGIN + 0.5


def test_a_kept_alive_connection_outlives_the_deadline_of_the_request_that_used_it(subscriber: Subscriber) -> None:
    # given a finished request whose connection went back to the pool
    assert delivery.post(subscriber.url("/a"), b"{}", {}).outcome is delivery.Outcome.DELIVERED
    # when its request's deadline passes
    time.sleep(TOTAL + 0.3)
    # then the watchdog left the pooled connection alone: the next request goes over it
    assert delivery.post(subscriber.url("/b"), b"{}", {}).outcome is delivery.Outcome.DELIVERED
    first, second = subscriber.deliveries()
    assert first.peer == second.peer


def test_connect_and_read_timeouts_never_exceed_the_total(settings) -> None:
    settings.HUB_HTTP_TOTAL_TIMEOUT = 2.5
    assert http.timeout() == (2.0, 2.5)


def test_a_healthy_request_is_unaffected_by_the_deadline(subscriber: Subscriber) -> None:
    subscriber.content["/feed"] = (b"hello", "text/plain")
    reply = http.request("GET", subscriber.url("/feed"), body_limit=100)
    assert (reply.status_code, reply.body, reply.truncated) == (200, b"hello", False)
    reply = http.request("GET", subscriber.url("/feed"), body_limit=3)
    assert (reply.body, reply.truncated) == (b"hel", True)
