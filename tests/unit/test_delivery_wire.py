"""What a delivery POST puts on the wire (the direct send skips requests' session machinery: it keeps this)."""

import base64

from subscriptions import delivery, http
from tests.support.subscriber import Answer, Subscriber


def test_a_delivery_sends_the_body_its_headers_and_the_session_headers(subscriber: Subscriber) -> None:
    # when
    result = delivery.post(
        subscriber.url("/cb"), b'{"a":1}', {"Content-Type": "application/json", "X-Hub-Delivery": "d1"}
    )
    # then
    assert result.outcome is delivery.Outcome.DELIVERED
    (received,) = subscriber.deliveries("/cb")
    assert received.body == b'{"a":1}'
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["Content-Length"] == "7"
    assert received.headers["X-Hub-Delivery"] == "d1"
    assert received.headers["User-Agent"] == http.USER_AGENT
    assert "Authorization" not in received.headers


def test_credentials_in_a_callback_url_are_sent_as_basic_auth(subscriber: Subscriber) -> None:
    # given
    callback = subscriber.url("/cb").replace("http://", "http://alice:s%40cret@")
    # when
    delivery.post(callback, b"x", {"Content-Type": "text/plain"})
    # then
    (received,) = subscriber.deliveries("/cb")
    assert received.headers["Authorization"] == "Basic " + base64.b64encode(b"alice:s@cret").decode()


def test_cookies_set_by_one_subscriber_are_never_sent_back(subscriber: Subscriber) -> None:
    # given
    subscriber.post_statuses["/a"] = [Answer(status=204, headers={"Set-Cookie": "session=abc; Path=/"})]
    delivery.post(subscriber.url("/a"), b"x", {"Content-Type": "text/plain"})
    # when
    delivery.post(subscriber.url("/b"), b"y", {"Content-Type": "text/plain"})
    # then
    (received,) = subscriber.deliveries("/b")
    assert "Cookie" not in received.headers


def test_a_redirect_answer_is_a_failure_and_is_not_followed(subscriber: Subscriber) -> None:
    # given
    subscriber.post_statuses["/moved"] = [Answer(status=307, headers={"Location": subscriber.url("/target")})]
    # when
    result = delivery.post(subscriber.url("/moved"), b"x", {"Content-Type": "text/plain"})
    # then
    assert result.outcome is delivery.Outcome.RETRY
    assert result.status_code == 307
    assert subscriber.deliveries("/target") == []
