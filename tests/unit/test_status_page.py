"""GET /hub/status: a subscriber sees its own subscription's state, lease, last success, last failure and waiting
deliveries, as HTML or JSON, and never content, secrets or another subscriber's figures."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from subscriptions import selectors
from subscriptions.models import Delivery, DeliveryAttempt, Subscription
from tests.support.factories import DeliveryFactory, NotificationFactory, SubscriptionFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_cache")]

TOPIC = "UN.CEFACT"
CALLBACK = "https://subscriber.example/cb?tenant=7"
SECRET = "status-page-must-never-show-this-secret-91ab"
CONTENT = b'{"order":"status-page-private-content-5c2e"}'
RESPONSE_BODY = "subscriber-said-private-words-77f0"
OTHER_CALLBACK = "https://other-subscriber.example/cb"


def _status(client: Client, *, accept: str = "application/json", **query: str):
    params = {"hub.callback": CALLBACK, "hub.topic": TOPIC, **query}
    return client.get("/hub/status", params, HTTP_ACCEPT=accept)


def _subscription(**fields) -> Subscription:
    return SubscriptionFactory(topic=TOPIC, topic_key="un.cefact", callback=CALLBACK, secret=SECRET, **fields)


def _delivery(subscription: Subscription, status: str, **fields) -> Delivery:
    notification = NotificationFactory(topic="UN.CEFACT.TRADE", content=CONTENT)
    return DeliveryFactory(notification=notification, subscription=subscription, status=status, **fields)


def _attempt(delivery: Delivery, started_at, status_code: int | None, error: str = "") -> None:
    DeliveryAttempt.objects.create(
        delivery=delivery,
        number=1,
        started_at=started_at,
        duration_ms=5,
        status_code=status_code,
        error=error,
        response_body=RESPONSE_BODY,
    )


@pytest.fixture
def failing() -> Subscription:
    """A paused subscription: one delivered, one failed for good with a 422, two waiting; and a neighbour."""
    now = timezone.now()
    subscription = _subscription(
        state=Subscription.State.PAUSED,
        paused_at=now - timedelta(minutes=5),
        pause_reason=f"5 consecutive failed delivery attempts; last: HTTP 422: {RESPONSE_BODY}",
        last_failure_at=now - timedelta(minutes=2),
        last_failure_reason=f"HTTP 422: {RESPONSE_BODY}",
    )
    delivered = _delivery(subscription, Delivery.Status.DELIVERED, delivered_at=now - timedelta(minutes=30))
    _attempt(delivered, now - timedelta(minutes=30), 204)
    failed = _delivery(
        subscription, Delivery.Status.FAILED, last_status_code=422, last_error=f"HTTP 422: {RESPONSE_BODY}"
    )
    _attempt(failed, now - timedelta(minutes=4), 503, "HTTP 503")
    _attempt(failed, now - timedelta(minutes=2), 422, "HTTP 422")
    _delivery(subscription, Delivery.Status.PENDING)
    _delivery(subscription, Delivery.Status.PENDING)
    # Another subscriber of the same topic, and this callback under another topic: never counted or shown.
    other = SubscriptionFactory(topic=TOPIC, topic_key="un.cefact", callback=OTHER_CALLBACK, secret=SECRET)
    _delivery(other, Delivery.Status.PENDING)
    elsewhere = SubscriptionFactory(topic="UN.OTHER", topic_key="un.other", callback=CALLBACK)
    _delivery(elsewhere, Delivery.Status.PENDING)
    _delivery(elsewhere, Delivery.Status.DELIVERED, delivered_at=now)
    return subscription


def test_json_status_reports_each_field_of_a_paused_subscription(client, failing) -> None:
    response = _status(client)

    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    body = response.json()
    assert body["topic"] == TOPIC and body["callback"] == CALLBACK
    assert body["state"] == "paused"
    assert body["paused_at"] == failing.paused_at.isoformat()
    assert body["lease_expires_at"] == failing.expires_at.isoformat()
    last_delivered = Delivery.objects.get(subscription=failing, status=Delivery.Status.DELIVERED).delivered_at
    assert body["last_delivered_at"] == last_delivered.isoformat()
    assert body["last_failure_at"] == failing.last_failure_at.isoformat()
    assert body["last_failure_status_code"] == 422  # the newest failed attempt, not the earlier 503
    assert body["last_failure_error"] == "HTTP 422"
    assert body["deliveries_waiting"] == 2  # its own pending deliveries only
    assert body["deliveries_waiting_capped"] is False
    assert set(body) == {
        "topic",
        "callback",
        "state",
        "paused_at",
        "lease_expires_at",
        "last_delivered_at",
        "last_failure_at",
        "last_failure_status_code",
        "last_failure_error",
        "deliveries_waiting",
        "deliveries_waiting_capped",
    }


def test_a_healthy_subscription_has_no_failure_and_nothing_waiting(client) -> None:
    subscription = _subscription()
    delivered = _delivery(subscription, Delivery.Status.DELIVERED, delivered_at=timezone.now())
    _attempt(delivered, timezone.now(), 200)

    body = _status(client).json()

    assert body["state"] == "active" and body["paused_at"] is None
    assert body["last_delivered_at"] == delivered.delivered_at.isoformat()
    assert body["last_failure_at"] is None and body["last_failure_status_code"] is None
    assert body["last_failure_error"] == ""
    assert body["deliveries_waiting"] == 0


def test_a_failure_without_an_http_status_reports_its_error_class(client) -> None:
    subscription = _subscription(last_failure_at=timezone.now(), last_failure_reason="timeout: read timed out")
    _attempt(_delivery(subscription, Delivery.Status.PENDING, attempts=1), timezone.now(), None, "timeout")

    body = _status(client).json()

    assert body["last_failure_status_code"] is None and body["last_failure_error"] == "timeout"
    assert "timeout" in _status(client, accept="text/html").content.decode()


def test_a_subscription_whose_lease_is_over_reads_expired(client) -> None:
    _subscription(expired=True)

    assert _status(client).json()["state"] == "expired"


def test_html_page_shows_the_same_fields_with_seconds(client, failing) -> None:
    response = _status(client, accept="text/html,application/xhtml+xml,*/*;q=0.8")

    page = response.content.decode()
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    assert "paused" in page and "HTTP status 422" in page
    assert timezone.localtime(failing.last_failure_at).strftime("%Y-%m-%d %H:%M:%S") in page
    assert timezone.localtime(failing.expires_at).strftime("%Y-%m-%d %H:%M:%S") in page
    assert '<td id="deliveries_waiting">2</td>' in page


def test_curl_without_accept_gets_the_html_page(client, failing) -> None:
    assert _status(client, accept="*/*")["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("accept", ["application/json", "text/html"])
def test_never_shows_content_secrets_answers_or_other_subscribers(client, failing, accept) -> None:
    body = _status(client, accept=accept).content

    assert SECRET.encode() not in body
    assert CONTENT not in body and b"status-page-private-content" not in body
    assert RESPONSE_BODY.encode() not in body  # neither the answer bodies nor the pause reason quoting them
    assert OTHER_CALLBACK.encode() not in body
    assert b"UN.OTHER" not in body


def test_a_dotted_topic_is_found_however_it_is_spelled(client, failing) -> None:
    for spelling in ["un.cefact", "UN.CEFACT.*"]:
        assert _status(client, **{"hub.topic": spelling}).json()["state"] == "paused"


def test_no_such_subscription_is_404_in_either_form(client, failing) -> None:
    response = _status(client, **{"hub.callback": "https://nobody.example/cb"})
    assert response.status_code == 404
    assert response.json()["errors"] == {
        "non_field_errors": ["there is no subscription of this callback to this topic"]
    }
    # A callback's subscription to another topic is not this one's.
    assert _status(client, **{"hub.topic": "UN.CEFACT.TRADE"}, accept="text/html").status_code == 404
    assert b"no subscription" in _status(client, **{"hub.topic": "UN.X"}, accept="text/html").content


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ({"hub.callback": ""}, "hub.callback", "hub.callback is required"),
        ({"hub.topic": ""}, "hub.topic", "hub.topic is required"),
        ({"hub.topic": "UN..X"}, "hub.topic", "empty segment"),
        ({"hub.callback": "https://x.example/\x00"}, "hub.callback", "control characters"),
        ({"hub.callback": "https://x.example/" + "a" * 2100}, "hub.callback", "longer than 2048"),
    ],
)
def test_bad_queries_get_400_naming_the_field(client, query, field, message) -> None:
    response = _status(client, **query)

    assert response.status_code == 400
    assert message in response.json()["errors"][field][0]
    assert message in _status(client, accept="text/html", **query).content.decode()


def test_a_repeated_field_gets_400(client) -> None:
    response = client.get(
        f"/hub/status?hub.topic=a.b&hub.topic=a.c&hub.callback={CALLBACK}", HTTP_ACCEPT="application/json"
    )
    assert response.status_code == 400 and "more than once" in response.json()["detail"]


def test_only_get_is_allowed(client, failing) -> None:
    response = client.post("/hub/status", {"hub.callback": CALLBACK, "hub.topic": TOPIC})
    assert response.status_code == 405 and response["Allow"] == "GET, HEAD"


def test_throttled_like_subscribe_per_address_with_retry_after(client, failing, settings) -> None:
    settings.HUB_THROTTLE_SUBSCRIBE = "2/m"

    statuses = [_status(client).status_code for _ in range(3)]
    refused = _status(client, accept="text/html")

    assert statuses == [200, 200, 429]
    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
    assert "HUB_THROTTLE_SUBSCRIBE" in refused.content.decode()
    other = Client(REMOTE_ADDR="198.51.100.9")
    assert _status(other).status_code == 200


def test_the_page_makes_the_same_few_queries_however_many_deliveries(client, failing) -> None:
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert _status(client).status_code == 200
        return len(captured)

    before = queries()
    for _ in range(30):
        _delivery(failing, Delivery.Status.FAILED)

    assert queries() == before <= 4


def test_waiting_count_stops_at_its_cap(client, failing, monkeypatch) -> None:
    monkeypatch.setattr(selectors.status, "STATUS_WAITING_CAP", 1)

    body = _status(client).json()

    assert body["deliveries_waiting"] == 1 and body["deliveries_waiting_capped"] is True
    assert "1 or more" in _status(client, accept="text/html").content.decode()


def test_the_status_page_is_in_the_openapi_schema(client) -> None:
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/hub/status"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"hub.callback", "hub.topic"}
    assert {"200", "400", "404", "429"} <= set(operation["responses"])
