"""What the JSON API accepts and returns (subscriptions/api): publish, inspect, manage subscriptions."""

import json

import pytest
from django.test import Client

from subscriptions import services
from subscriptions.api.errors import hub_error_response
from subscriptions.models import Delivery, Notification, Subscription, SubscriptionRequest
from tests.support.factories import DeliveryFactory, NotificationFactory, SubscriptionFactory
from websubhub.celery import app as celery_app

pytestmark = pytest.mark.django_db

SECRET = "Zq7-very-distinctive-secret-9Xk"


@pytest.fixture(autouse=True)
def sent_tasks(monkeypatch):
    """Every task the code sends, as (name, kwargs); nothing reaches a broker."""
    sent: list[tuple[str, dict]] = []
    monkeypatch.setattr(celery_app, "send_task", lambda name, args=None, kwargs=None, **_: sent.append((name, kwargs)))
    return sent


def post_json(client, path, payload):
    return client.post(path, data=json.dumps(payload), content_type="application/json")


# --- POST /api/notifications/ -------------------------------------------------------------


def test_publish_gets_202_with_the_id_of_the_stored_notification(client):
    response = post_json(client, "/api/notifications/", {"topic": "UN.CEFACT.TRADE", "content": {"a": [1, "é"]}})
    assert response.status_code == 202
    notification = Notification.objects.get()
    assert response.json() == {"id": notification.pk}
    assert notification.topic == "UN.CEFACT.TRADE"
    assert notification.content_type == "application/json"
    assert bytes(notification.content) == '{"a":[1,"é"]}'.encode()
    assert notification.spread_at is None


def test_publish_answers_what_drf_would_render_for_it(client):
    from rest_framework.renderers import JSONRenderer

    response = post_json(client, "/api/notifications/", {"topic": "UN.CEFACT.TRADE", "content": 1})
    assert response.content == JSONRenderer().render({"id": Notification.objects.get().pk})
    assert response["Content-Type"] == "application/json"
    assert response["Allow"] == "POST, OPTIONS"


def test_publish_enqueues_spread_after_commit(client, sent_tasks, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = post_json(client, "/api/notifications/", {"topic": "UN.CEFACT", "content": 1})
        assert sent_tasks == []
    assert len(callbacks) == 1
    assert sent_tasks == [("hub.spread", {"notification_id": response.json()["id"]})]


def test_publish_with_null_content_is_accepted(client):
    response = post_json(client, "/api/notifications/", {"topic": "UN.CEFACT", "content": None})
    assert response.status_code == 202
    assert bytes(Notification.objects.get().content) == b"null"


@pytest.mark.parametrize("content", [0, "", [], {}, False, "text"])
def test_publish_with_falsy_or_scalar_content_is_accepted(client, content):
    response = post_json(client, "/api/notifications/", {"topic": "UN.CEFACT", "content": content})
    assert response.status_code == 202
    assert json.loads(bytes(Notification.objects.get().content)) == content


def test_publish_to_a_url_topic_is_accepted(client):
    response = post_json(client, "/api/notifications/", {"topic": "https://publisher.example/feed", "content": {}})
    assert response.status_code == 202


@pytest.mark.parametrize("missing", ["topic", "content"])
def test_publish_without_a_required_field_is_refused(client, missing):
    payload = {"topic": "UN.CEFACT", "content": {"x": 1}}
    del payload[missing]
    response = post_json(client, "/api/notifications/", payload)
    assert response.status_code == 400
    assert "required" in response.json()["errors"][missing][0]
    assert not Notification.objects.exists()


@pytest.mark.parametrize("topic", ["UN.CEFACT.*", "UN.*"])
def test_publish_to_a_wildcard_topic_is_refused(client, topic):
    response = post_json(client, "/api/notifications/", {"topic": topic, "content": {}})
    assert response.status_code == 400
    assert "cannot end in '.*'" in response.json()["errors"]["topic"][0]
    assert not Notification.objects.exists()


@pytest.mark.parametrize(
    ("topic", "fragment"),
    [
        ("", "blank"),
        (None, "null"),
        ("*", "names one topic"),
        ("UN..CEFACT", "empty segment"),
        ("UN CEFACT", "whitespace"),
        ("UN.\u0000", "Null characters"),
        ("A" * 2049, "2048"),
        ("https:///feed", "no host"),
    ],
)
def test_publish_with_invalid_topic_is_refused(client, topic, fragment):
    response = post_json(client, "/api/notifications/", {"topic": topic, "content": {}})
    assert response.status_code == 400
    assert fragment in response.json()["errors"]["topic"][0]
    assert not Notification.objects.exists()


@pytest.mark.parametrize("body", ["not json", "{", '{"topic": "UN.X", "content": }', "\xff"])
def test_publish_with_a_body_that_is_not_json_is_refused(client, body):
    response = client.post("/api/notifications/", data=body, content_type="application/json")
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]


def test_publish_with_a_json_array_body_is_refused(client):
    response = post_json(client, "/api/notifications/", [{"topic": "UN.X", "content": 1}])
    assert response.status_code == 400
    assert not Notification.objects.exists()


def test_publish_with_deeply_nested_json_is_a_400_not_a_500(client):
    body = '{"topic": "UN.X", "content": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = client.post("/api/notifications/", data=body, content_type="application/json")
    assert response.status_code == 400


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", "application/xml"])
def test_publish_with_wrong_content_type_is_refused_with_415(client, content_type):
    response = client.post("/api/notifications/", data='{"topic": "UN.X", "content": 1}', content_type=content_type)
    assert response.status_code == 415
    assert content_type in response.json()["detail"]
    assert not Notification.objects.exists()


def test_publish_larger_than_the_limit_is_refused_with_413(client, settings):
    settings.HUB_MAX_CONTENT_BYTES = 10
    response = post_json(client, "/api/notifications/", {"topic": "UN.X", "content": "x" * 20})
    assert response.status_code == 413
    assert "HUB_MAX_CONTENT_BYTES" in response.json()["detail"]
    assert not Notification.objects.exists()


def test_get_on_the_notification_list_is_not_allowed(client):
    assert client.get("/api/notifications/").status_code == 405


# --- GET /api/notifications/<id>/ -----------------------------------------------------------


def test_notification_detail_counts_deliveries_by_status(client):
    notification = NotificationFactory(topic="UN.CEFACT")
    for status in ["pending", "pending", "delivered", "delivered", "delivered", "failed"]:
        DeliveryFactory(notification=notification, status=status)
    DeliveryFactory(status="cancelled")  # another notification's

    response = client.get(f"/api/notifications/{notification.pk}/")

    assert response.status_code == 200
    data = response.json()
    assert data["id"] == notification.pk
    assert data["topic"] == "UN.CEFACT"
    assert data["content_type"] == "application/json"
    assert data["spread_at"] is None
    assert data["deliveries"] == {"pending": 2, "delivered": 3, "failed": 1, "cancelled": 0}


def test_notification_detail_lists_every_status_when_there_are_no_deliveries(client):
    notification = NotificationFactory()
    response = client.get(f"/api/notifications/{notification.pk}/")
    assert response.json()["deliveries"] == dict.fromkeys(Delivery.Status.values, 0)


def test_notification_detail_does_not_return_the_content(client):
    notification = NotificationFactory(content=b'{"private":"payload-xyz"}')
    response = client.get(f"/api/notifications/{notification.pk}/")
    assert b"payload-xyz" not in response.content
    assert "content" not in response.json()


def test_notification_detail_of_unknown_id_is_404(client):
    assert client.get("/api/notifications/999999/").status_code == 404


# --- /api/subscriptions/ ---------------------------------------------------------------------


def test_subscription_list_returns_every_subscription_in_id_order(client):
    first, second = SubscriptionFactory(), SubscriptionFactory()
    data = client.get("/api/subscriptions/").json()
    assert data["count"] == 2
    assert [row["id"] for row in data["results"]] == [first.pk, second.pk]


def test_subscription_list_filters_by_topic(client):
    wanted = SubscriptionFactory(topic="UN.CEFACT")
    SubscriptionFactory(topic="UN.CEFACT.TRADE")
    SubscriptionFactory(topic="https://publisher.example/feed")
    data = client.get("/api/subscriptions/", {"topic": "UN.CEFACT"}).json()
    assert [row["id"] for row in data["results"]] == [wanted.pk]


def test_subscription_list_topic_filter_finds_the_topic_however_it_is_spelled(client):
    wanted = SubscriptionFactory(topic="UN.CEFACT.*")
    SubscriptionFactory(topic="UN.CEFACTX")
    for spelling in ("UN.CEFACT.*", "un.cefact", "Un.Cefact.*"):
        data = client.get("/api/subscriptions/", {"topic": spelling}).json()
        assert [row["id"] for row in data["results"]] == [wanted.pk], spelling


def test_subscription_list_url_topic_filter_is_exact(client):
    wanted = SubscriptionFactory(topic="https://publisher.example/Feed")
    SubscriptionFactory(topic="https://publisher.example/feed")
    data = client.get("/api/subscriptions/", {"topic": "https://publisher.example/Feed"}).json()
    assert [row["id"] for row in data["results"]] == [wanted.pk]


@pytest.mark.parametrize("topic", ["UN..CEFACT", "*", "", "UN CEFACT"])
def test_subscription_list_filter_by_an_invalid_topic_is_empty(client, topic):
    SubscriptionFactory(topic="UN.CEFACT")
    response = client.get("/api/subscriptions/", {"topic": topic})
    assert response.status_code == 200
    assert response.json()["results"] == []


def test_subscription_list_filters_by_callback(client):
    wanted = SubscriptionFactory(callback="https://sub.example/cb?a=1&b=2")
    SubscriptionFactory(callback="https://sub.example/cb")
    data = client.get("/api/subscriptions/", {"callback": "https://sub.example/cb?a=1&b=2"}).json()
    assert [row["id"] for row in data["results"]] == [wanted.pk]


def test_subscription_list_filters_by_topic_and_callback_together(client):
    wanted = SubscriptionFactory(topic="UN.A", callback="https://sub.example/1")
    SubscriptionFactory(topic="UN.A", callback="https://sub.example/2")
    SubscriptionFactory(topic="UN.B", callback="https://sub.example/1")
    data = client.get("/api/subscriptions/", {"topic": "UN.A", "callback": "https://sub.example/1"}).json()
    assert [row["id"] for row in data["results"]] == [wanted.pk]


def test_subscription_list_filter_with_no_match_is_empty(client):
    SubscriptionFactory()
    data = client.get("/api/subscriptions/", {"topic": "UN.NOTHING"}).json()
    assert data["count"] == 0
    assert data["results"] == []


def test_subscription_detail_returns_the_subscription(client):
    subscription = SubscriptionFactory(topic="UN.CEFACT.*", secret=SECRET)
    response = client.get(f"/api/subscriptions/{subscription.pk}/")
    assert response.status_code == 200
    data = response.json()
    assert data["id"] == subscription.pk
    assert data["topic"] == "UN.CEFACT.*"
    assert data["callback"] == subscription.callback
    assert data["state"] == "active"
    assert data["lease_seconds"] == subscription.lease_seconds
    assert data["has_secret"] is True


def test_subscription_detail_of_unknown_id_is_404(client):
    assert client.get("/api/subscriptions/999999/").status_code == 404


def test_subscription_list_and_detail_never_contain_the_secret(client):
    subscription = SubscriptionFactory(secret=SECRET)
    SubscriptionFactory(secret="")
    listed = client.get("/api/subscriptions/")
    detailed = client.get(f"/api/subscriptions/{subscription.pk}/")
    for response in (listed, detailed):
        assert response.status_code == 200
        assert SECRET.encode() not in response.content
        assert b'"secret"' not in response.content
    assert [row["has_secret"] for row in listed.json()["results"]] == [True, False]


def test_subscription_delete_removes_it_and_keeps_its_deliveries(client):
    subscription = SubscriptionFactory()
    delivery = DeliveryFactory(subscription=subscription)
    response = client.delete(f"/api/subscriptions/{subscription.pk}/")
    assert response.status_code == 204
    assert not Subscription.objects.filter(pk=subscription.pk).exists()
    delivery.refresh_from_db()
    assert delivery.subscription_id is None


def test_subscription_delete_of_unknown_id_is_404(client):
    assert client.delete("/api/subscriptions/999999/").status_code == 404


# --- POST /api/subscriptions/ -------------------------------------------------------------------


def test_subscribe_through_the_api_gets_202_and_a_pending_request(
    client, settings, sent_tasks, django_capture_on_commit_callbacks
):
    settings.HUB_LEASE_SECONDS_MIN = 60
    payload = {"topic": "UN.CEFACT.*", "callback": "https://sub.example/cb", "lease_seconds": 600, "secret": SECRET}
    with django_capture_on_commit_callbacks(execute=True):
        response = post_json(client, "/api/subscriptions/", payload)
    assert response.status_code == 202
    request = SubscriptionRequest.objects.get()
    data = response.json()
    assert data["id"] == request.pk
    assert data["mode"] == "subscribe"
    assert data["state"] == "pending"
    assert data["topic"] == "UN.CEFACT.*"
    assert data["lease_seconds"] == 600
    assert request.secret == SECRET
    assert request.topic_key == "un.cefact"
    assert not Subscription.objects.exists()
    assert sent_tasks == [("hub.verify", {"request_id": request.pk})]


def test_subscribe_through_the_api_never_echoes_the_secret(client):
    response = post_json(
        client, "/api/subscriptions/", {"topic": "UN.X", "callback": "https://s.example/", "secret": SECRET}
    )
    assert response.status_code == 202
    assert SECRET.encode() not in response.content


def test_subscribe_through_the_api_without_lease_gets_the_default(client, settings):
    settings.HUB_LEASE_SECONDS_DEFAULT = 5000
    for payload in (
        {"topic": "UN.X", "callback": "https://s.example/1"},
        {"topic": "UN.X", "callback": "https://s.example/2", "lease_seconds": None},
    ):
        assert post_json(client, "/api/subscriptions/", payload).status_code == 202
    assert list(SubscriptionRequest.objects.values_list("lease_seconds", flat=True)) == [5000, 5000]


def test_subscription_request_detail_shows_its_state(client):
    response = post_json(client, "/api/subscriptions/", {"topic": "UN.X", "callback": "https://s.example/"})
    detail = client.get(f"/api/subscription-requests/{response.json()['id']}/")
    assert detail.status_code == 200
    assert detail.json()["state"] == "pending"


@pytest.mark.parametrize(
    ("payload", "field", "fragment"),
    [
        ({"callback": "https://s.example/"}, "topic", "required"),
        ({"topic": "UN.X"}, "callback", "required"),
        ({"topic": "UN.X", "callback": "https://s.example/", "lease_seconds": 0}, "lease_seconds", "greater than"),
        ({"topic": "UN.X", "callback": "https://s.example/", "lease_seconds": -5}, "lease_seconds", "greater than"),
        ({"topic": "UN.X", "callback": "https://s.example/", "lease_seconds": "abc"}, "lease_seconds", "integer"),
        ({"topic": "UN.X", "callback": "https://s.example/", "lease_seconds": 1.5}, "lease_seconds", "integer"),
        ({"topic": "UN.X", "callback": "https://s.example/", "secret": None}, "secret", "null"),
        ({"topic": "UN.X", "callback": "https://s.example/", "secret": "a\u0000b"}, "secret", "Null characters"),
        ({"topic": "", "callback": "https://s.example/"}, "topic", "blank"),
    ],
)
def test_subscribe_through_the_api_with_invalid_field_is_refused(client, payload, field, fragment):
    response = post_json(client, "/api/subscriptions/", payload)
    assert response.status_code == 400
    assert fragment in response.json()["errors"][field][0]
    assert not SubscriptionRequest.objects.exists()


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"topic": "UN..X", "callback": "https://s.example/"}, "empty segment"),
        ({"topic": "*", "callback": "https://s.example/"}, "lone '*'"),
        ({"topic": "UN.X", "callback": "ftp://s.example/"}, "http:// or https://"),
        ({"topic": "UN.X", "callback": "https://"}, "no host"),
        ({"topic": "UN.X", "callback": "https://s.example:99999/"}, "not a valid URL"),
        ({"topic": "UN.X", "callback": "https://s.example/", "secret": "s" * 200}, "shorter than 200 bytes"),
        ({"topic": "UN.X", "callback": "https://s.example/", "secret": "é" * 100}, "shorter than 200 bytes"),
    ],
)
def test_subscribe_through_the_api_refused_by_the_hub_rules_names_the_problem(client, payload, fragment):
    response = post_json(client, "/api/subscriptions/", payload)
    assert response.status_code == 400
    assert fragment in response.json()["detail"]
    assert not SubscriptionRequest.objects.exists()


def test_subscribe_through_the_api_with_wrong_content_type_is_415(client):
    response = client.post("/api/subscriptions/", data="topic=UN.X", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415


@pytest.mark.parametrize("query", [{"topic": "UN.\x00"}, {"callback": "https://s.example/\x00"}])
def test_subscription_list_filter_with_nul_is_empty_not_an_error(client, query):
    SubscriptionFactory()
    response = client.get("/api/subscriptions/", query)
    assert response.status_code == 200
    assert response.json()["results"] == []


@pytest.mark.parametrize(
    "path", ["/api/notifications/99999999999999999999999/", "/api/subscriptions/99999999999999999999999/"]
)
def test_detail_of_an_id_beyond_the_integer_range_is_404(client, path):
    assert client.get(path).status_code == 404


def test_subscribe_through_the_api_with_a_huge_lease_is_clamped(client, settings):
    settings.HUB_LEASE_SECONDS_MAX = 86_400
    payload = {"topic": "UN.X", "callback": "https://s.example/", "lease_seconds": 10**30}
    response = post_json(client, "/api/subscriptions/", payload)
    assert response.status_code == 202
    assert SubscriptionRequest.objects.get().lease_seconds == 86_400


def test_every_api_refusal_has_the_same_json_shape(client):
    # given three different kinds of refusal
    invalid = client.post("/api/notifications/", {"topic": "a..b"}, content_type="application/json")
    missing = client.get("/api/notifications/999999/")
    unknown = client.get("/api/no-such-endpoint/")
    # then each has a readable detail; invalid input also names its fields
    for response in (invalid, missing, unknown):
        assert response["Content-Type"] == "application/json"
        assert isinstance(response.json()["detail"], str) and response.json()["detail"]
    assert set(invalid.json()["errors"]) == {"topic", "content"}
    assert "empty segment" in invalid.json()["detail"]


# --- PATCH /api/subscriptions/<id>/: only the writable fields ----------------------------------


@pytest.mark.parametrize(
    ("payload", "field", "fragment"),
    [
        ({"topic": "other.topic"}, "topic", "topic cannot be changed"),
        ({"callback": "http://elsewhere.example/cb"}, "callback", "callback cannot be changed"),
        ({"state": "expired", "rate_limit": "5/s"}, "state", "state cannot be changed"),
        ({"colour": "blue"}, "colour", "colour is not a field of a subscription"),
    ],
)
def test_patch_of_a_field_that_cannot_be_changed_is_refused_naming_it_and_the_writable_ones(
    client, payload, field, fragment
):
    # given
    subscription = SubscriptionFactory(topic="a.b", callback="http://sub.example/cb")
    # when
    response = client.patch(
        f"/api/subscriptions/{subscription.pk}/", data=json.dumps(payload), content_type="application/json"
    )
    # then
    assert response.status_code == 400, response.content
    body = response.json()
    assert fragment in body["errors"][field][0]
    assert "rate_limit, standard_webhooks" in body["errors"][field][0]
    assert fragment in body["detail"]
    subscription.refresh_from_db()
    assert (subscription.topic, subscription.callback, subscription.state, subscription.rate_limit) == (
        "a.b",
        "http://sub.example/cb",
        Subscription.State.ACTIVE,
        "",
    )


def test_patch_of_the_writable_fields_still_works(client):
    subscription = SubscriptionFactory()
    response = client.patch(
        f"/api/subscriptions/{subscription.pk}/",
        data=json.dumps({"rate_limit": "5/s", "standard_webhooks": True}),
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    assert (response.json()["rate_limit"], response.json()["standard_webhooks"]) == ("5/s", True)


# --- Refusals name JSON fields and always carry `errors` -----------------------------------------


@pytest.mark.parametrize(
    ("path", "payload", "field", "message"),
    [
        (
            "/api/subscriptions/",
            {"topic": "a.b", "callback": "ftp://sub.example/cb"},
            "callback",
            "callback must be an http:// or https:// URL",
        ),
        ("/api/subscriptions/", {"topic": "a.b", "callback": "http://"}, "callback", "callback URL has no host"),
        (
            "/api/subscriptions/",
            {"topic": "a.b", "callback": "http://sub.example/cb", "secret": "s" * 250},
            "secret",
            "secret must be shorter than 200 bytes",
        ),
        (
            "/api/subscriptions/",
            {"topic": "a..b", "callback": "http://sub.example/cb"},
            "topic",
            "topic has an empty segment",
        ),
        ("/api/notifications/", {"topic": "a..b", "content": 1}, "topic", "topic has an empty segment"),
    ],
)
def test_api_refusals_from_the_hub_rules_name_the_json_field_not_the_form_field(client, path, payload, field, message):
    response = post_json(client, path, payload)
    assert response.status_code == 400, response.content
    body = response.json()
    assert list(body["errors"]) == [field]
    assert body["errors"][field][0].startswith(message)
    assert message in body["detail"]
    assert "hub." not in response.content.decode()
    assert not SubscriptionRequest.objects.exists()


def test_api_refusal_about_no_single_field_goes_under_non_field_errors():
    response = hub_error_response(services.HubError("there is no subscription of this callback to this topic", 404))
    assert response.data == {
        "detail": "there is no subscription of this callback to this topic",
        "errors": {"non_field_errors": ["there is no subscription of this callback to this topic"]},
    }


def _delivered_delivery_retry_path() -> str:
    return f"/api/deliveries/{DeliveryFactory(status=Delivery.Status.DELIVERED).pk}/retry"


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("get", "/api/subscriptions/999/", {}, 404),
        ("get", "/api/nothing-here/", {}, 404),
        ("get", "/api/notifications/", {}, 405),
        ("post", "/api/notifications/", {"data": "x", "content_type": "text/plain"}, 415),
        ("post", "/api/notifications/", {"data": "{not json", "content_type": "application/json"}, 400),
        ("post", "/api/notifications/", {"data": "[]", "content_type": "application/json"}, 400),
        ("post", "/api/notifications/", {"data": "{}", "content_type": "application/json", "anonymous": True}, 401),
        ("post", "delivered", {}, 409),
    ],
)
def test_every_api_refusal_has_detail_and_errors(client, method, path, kwargs, status):
    if path == "delivered":
        path = _delivered_delivery_retry_path()
    caller = Client() if kwargs.pop("anonymous", False) else client
    response = getattr(caller, method)(path, **kwargs)
    assert response.status_code == status, response.content
    body = response.json()
    assert body["detail"]
    assert body["errors"] and all(isinstance(messages, list) and messages for messages in body["errors"].values())


def test_api_refusal_of_an_oversized_body_has_errors_too(client, settings):
    settings.HUB_MAX_REQUEST_BYTES = 100
    response = post_json(client, "/api/notifications/", {"topic": "a.b", "content": "x" * 200})
    assert response.status_code == 413
    assert response.json()["errors"] == {"non_field_errors": [response.json()["detail"]]}


# --- Text that is not valid Unicode: a lone surrogate spelled as a JSON escape -----------------

# The JSON escape of a lone surrogate, put where each document says LONE: the parser turns it into a str
# that UTF-8 cannot encode.
LONE = "\\udc00"


@pytest.mark.parametrize(
    ("method", "path", "document", "field"),
    [
        ("post", "/api/notifications/", '{"topic": "a.b", "content": {"LONE": 1}}', "content"),
        ("post", "/api/notifications/", '{"topic": "a.b", "content": {"x": [1, {"y": "aLONEb"}]}}', "content"),
        ("post", "/api/notifications/", '{"topic": "a.LONE", "content": 1}', "topic"),
        ("post", "/api/subscriptions/", '{"topic": "a.b", "callback": "http://s.example/LONE"}', "callback"),
        ("post", "/api/subscriptions/", '{"topic": "aLONE", "callback": "http://s.example/"}', "topic"),
        (
            "post",
            "/api/subscriptions/",
            '{"topic": "a.b", "callback": "http://s.example/", "secret": "LONE"}',
            "secret",
        ),
        ("post", "/api/subscriptions/", '{"topic": "a.b", "LONE": 1}', "non_field_errors"),
        ("post", "/api/notifications/", '["LONE"]', "non_field_errors"),
        ("patch", "subscription", '{"rate_limit": "5/sLONE"}', "rate_limit"),
    ],
)
def test_json_holding_a_lone_surrogate_is_a_400_naming_the_field(client, method, path, document, field):
    if path == "subscription":
        path = f"/api/subscriptions/{SubscriptionFactory().pk}/"
    document = document.replace("LONE", LONE)
    # when
    response = getattr(client, method)(path, data=document.encode("ascii"), content_type="application/json")
    # then
    assert response.status_code == 400, response.content
    body = response.json()
    assert list(body["errors"]) == [field]
    assert "not valid Unicode: a lone surrogate (\\udc00)" in body["errors"][field][0]
    assert not Notification.objects.exists()
    assert not SubscriptionRequest.objects.exists()
    assert not Subscription.objects.exclude(rate_limit="").exists()


@pytest.mark.parametrize("charset", ["utf-16", "utf-32-le"])
def test_a_lone_surrogate_in_a_body_of_another_charset_is_a_400_too(client, charset):
    # given a body whose bytes do not spell the escape as UTF-8 would (the test client encodes it in charset)
    document = '{"topic": "a.b", "content": "LONE"}'.replace("LONE", LONE)
    # when
    response = client.post("/api/notifications/", data=document, content_type=f"application/json; charset={charset}")
    # then
    assert response.status_code == 400, response.content
    assert "lone surrogate (\\udc00)" in response.json()["errors"]["content"][0]
    assert not Notification.objects.exists()
