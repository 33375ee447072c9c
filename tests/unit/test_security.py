"""Who may do what, limits on what comes in, throttles, and secrets that never leave the hub."""

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from rest_framework.authtoken.models import Token

from subscriptions.models import Notification, Subscription, SubscriptionRequest
from tests.support.auth import api_client
from tests.support.factories import DeliveryFactory, SubscriptionFactory

# Tasks are recorded, not sent; throttle counters start at zero.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_broker", "fresh_cache")]

ROOT = Path(__file__).resolve().parents[2]
FORM = "application/x-www-form-urlencoded"


# --- Authentication and permissions ----------------------------------------------------

MANAGE_ENDPOINTS = [
    ("get", "/api/subscriptions/"),
    ("post", "/api/subscriptions/"),
    ("get", "/api/subscriptions/1/"),
    ("patch", "/api/subscriptions/1/"),
    ("delete", "/api/subscriptions/1/"),
    ("post", "/api/subscriptions/1/retry-failed"),
    ("post", "/api/subscriptions/1/pause"),
    ("post", "/api/subscriptions/1/resume"),
    ("get", "/api/deliveries/"),
    ("get", "/api/deliveries/1/"),
    ("post", "/api/deliveries/1/retry"),
    ("get", "/api/subscription-requests/1/"),
]


@pytest.mark.parametrize(("method", "path"), [*MANAGE_ENDPOINTS, ("post", "/api/notifications/")])
def test_api_without_a_token_is_401(method: str, path: str) -> None:
    response = getattr(Client(), method)(path, {}, content_type="application/json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert "credentials" in response.json()["detail"].lower()


def test_api_with_an_unknown_token_is_401() -> None:
    response = Client(HTTP_AUTHORIZATION="Token not-a-real-token").get("/api/subscriptions/")
    assert response.status_code == 401


@pytest.mark.parametrize(("method", "path"), MANAGE_ENDPOINTS)
def test_publish_token_cannot_manage(method: str, path: str) -> None:
    response = getattr(api_client(publish=True, manage=False), method)(path, {}, content_type="application/json")
    assert response.status_code == 403
    assert "manage permission" in response.json()["detail"]


def test_manage_token_cannot_publish() -> None:
    response = api_client(publish=False, manage=True).post(
        "/api/notifications/", {"topic": "a.b", "content": 1}, content_type="application/json"
    )
    assert response.status_code == 403
    assert "publish permission" in response.json()["detail"]
    assert not Notification.objects.exists()


def test_publish_token_publishes_and_reads_its_notification() -> None:
    client = api_client(publish=True, manage=False)
    response = client.post("/api/notifications/", {"topic": "a.b", "content": 1}, content_type="application/json")
    assert response.status_code == 202
    assert client.get(f"/api/notifications/{response.json()['id']}/").status_code == 200


def test_admin_requires_a_staff_login() -> None:
    response = Client().get("/admin/subscriptions/subscription/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_websub_endpoint_stays_open_for_subscribers() -> None:
    body = urlencode({"hub.mode": "subscribe", "hub.topic": "a.b", "hub.callback": "https://sub.example/cb"})
    assert Client().post("/hub", body, content_type=FORM).status_code == 202


def test_hub_token_creates_a_token_with_the_asked_permissions_and_prints_it_last() -> None:
    out = StringIO()
    call_command("hub_token", "publisher-1", "--publish", stdout=out, stderr=StringIO())
    key = out.getvalue().strip().splitlines()[-1]
    token = Token.objects.get(key=key)
    assert token.user.username == "publisher-1"
    assert token.user.has_perm("subscriptions.publish_notification")
    assert not token.user.has_perm("subscriptions.manage_hub")
    assert not token.user.has_usable_password()


def test_hub_token_rotates_the_token_and_keeps_permissions() -> None:
    first = StringIO()
    call_command("hub_token", "ops", "--manage", stdout=first, stderr=StringIO())
    second = StringIO()
    call_command("hub_token", "ops", stdout=second, stderr=StringIO())
    old, new = first.getvalue().split()[-1], second.getvalue().split()[-1]
    assert old != new
    assert not Token.objects.filter(key=old).exists()
    user = get_user_model().objects.get(username="ops")
    assert user.has_perm("subscriptions.manage_hub")
    response = Client(HTTP_AUTHORIZATION=f"Token {new}").get("/api/subscriptions/")
    assert response.status_code == 200
    assert Client(HTTP_AUTHORIZATION=f"Token {old}").get("/api/subscriptions/").status_code == 401


# --- Publish pings ---------------------------------------------------------------------------


def test_publish_ping_for_a_topic_outside_the_allowed_prefixes_is_refused(settings, no_broker) -> None:
    settings.HUB_PUBLISH_ALLOWED_TOPICS = ["https://blog.example/"]
    body = urlencode({"hub.mode": "publish", "hub.url": "https://other.example/feed"})
    response = Client().post("/hub", body, content_type=FORM)
    assert response.status_code == 403
    assert "HUB_PUBLISH_ALLOWED_TOPICS" in response.content.decode()
    assert no_broker == []


def test_publish_ping_for_an_allowed_prefix_is_accepted(settings, no_broker) -> None:
    settings.HUB_PUBLISH_ALLOWED_TOPICS = ["https://blog.example/"]
    body = urlencode({"hub.mode": "publish", "hub.url": "https://blog.example/feed"})
    assert Client().post("/hub", body, content_type=FORM).status_code == 202
    assert no_broker == [("hub.fetch_topic", no_broker[0][1])]


# --- Limits ------------------------------------------------------------------------------------


def test_request_body_over_the_limit_is_413_naming_the_limit(settings) -> None:
    settings.HUB_MAX_REQUEST_BYTES = 1000
    big = {"topic": "a.b", "content": "x" * 2000}
    response = api_client().post("/api/notifications/", big, content_type="application/json")
    assert response.status_code == 413
    assert "HUB_MAX_REQUEST_BYTES (1000 bytes)" in response.json()["detail"]
    response = Client().post("/hub", "hub.mode=subscribe&" + "x" * 2000, content_type=FORM)
    assert response.status_code == 413
    assert "HUB_MAX_REQUEST_BYTES" in response.content.decode()
    assert not Notification.objects.exists()


def test_content_over_the_limit_is_413_naming_the_limit(settings) -> None:
    settings.HUB_MAX_CONTENT_BYTES = 100
    response = api_client().post(
        "/api/notifications/", {"topic": "a.b", "content": "y" * 200}, content_type="application/json"
    )
    assert response.status_code == 413
    assert "HUB_MAX_CONTENT_BYTES (100 bytes)" in response.json()["detail"]
    assert not Notification.objects.exists()


def test_json_nested_too_deep_is_400_naming_the_limit(settings) -> None:
    settings.HUB_MAX_JSON_DEPTH = 5
    content = {"a": [[[[["deep"]]]]]}
    response = api_client().post(
        "/api/notifications/", {"topic": "a.b", "content": content}, content_type="application/json"
    )
    assert response.status_code == 400
    assert "HUB_MAX_JSON_DEPTH (5 levels)" in response.json()["detail"]


def test_json_deeper_than_python_can_read_is_400() -> None:
    response = api_client().post("/api/notifications/", "[" * 100_000 + "]" * 100_000, content_type="application/json")
    assert response.status_code == 400


# --- Throttles ----------------------------------------------------------------------------------


def _subscribe(client: Client, callback: str, address: str = "203.0.113.7") -> object:
    body = urlencode({"hub.mode": "subscribe", "hub.topic": "a.b", "hub.callback": callback})
    return client.post("/hub", body, content_type=FORM, REMOTE_ADDR=address)


def test_subscribe_requests_over_the_rate_per_address_get_429_with_retry_after(settings) -> None:
    settings.HUB_THROTTLE_SUBSCRIBE = "3/m"
    client = Client()
    statuses = [_subscribe(client, f"https://host{n}.example/cb").status_code for n in range(4)]
    assert statuses == [202, 202, 202, 429]
    refused = _subscribe(client, "https://host9.example/cb")
    assert int(refused["Retry-After"]) >= 1
    assert "HUB_THROTTLE_SUBSCRIBE" in refused.content.decode()
    assert SubscriptionRequest.objects.count() == 3
    # Another address is not affected.
    assert _subscribe(client, "https://host10.example/cb", address="198.51.100.9").status_code == 202


def test_subscribe_requests_over_the_rate_per_callback_host_get_429(settings) -> None:
    settings.HUB_THROTTLE_SUBSCRIBE = "2/m"
    client = Client()
    # Many addresses aiming verification requests at one victim host.
    statuses = [
        _subscribe(client, f"https://victim.example/cb{n}", address=f"198.51.100.{n}").status_code for n in range(3)
    ]
    assert statuses == [202, 202, 429]


def test_publish_over_the_rate_per_token_gets_429(settings) -> None:
    settings.HUB_THROTTLE_PUBLISH = "2/m"
    client = api_client(publish=True, manage=False)

    def publish() -> int:
        return client.post(
            "/api/notifications/", {"topic": "a.b", "content": 1}, content_type="application/json"
        ).status_code

    assert [publish(), publish(), publish()] == [202, 202, 429]
    assert Notification.objects.count() == 2


def test_throttle_set_to_off_never_refuses(settings) -> None:
    settings.HUB_THROTTLE_SUBSCRIBE = "off"
    client = Client()
    assert {_subscribe(client, f"https://h{n}.example/cb").status_code for n in range(40)} == {202}


# --- Secrets ----------------------------------------------------------------------------------------

SECRET = "very-secret-value-4711"


def test_api_never_returns_a_subscription_secret() -> None:
    subscription = SubscriptionFactory(secret=SECRET)
    DeliveryFactory(subscription=subscription)
    client = api_client()
    for path in ["/api/subscriptions/", f"/api/subscriptions/{subscription.pk}/", "/api/deliveries/"]:
        response = client.get(path)
        assert response.status_code == 200
        assert SECRET.encode() not in response.content


def test_admin_never_shows_a_subscription_secret(admin_client) -> None:
    subscription = SubscriptionFactory(secret=SECRET)
    request = SubscriptionRequest.objects.create(
        mode="subscribe", topic="a.b", topic_key="a.b", callback="https://s.example/", secret=SECRET
    )
    pages = [
        "/admin/subscriptions/subscription/",
        f"/admin/subscriptions/subscription/{subscription.pk}/change/",
        "/admin/subscriptions/subscriptionrequest/",
        f"/admin/subscriptions/subscriptionrequest/{request.pk}/change/",
    ]
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200, page
        assert SECRET.encode() not in response.content, page


def test_secret_is_forgotten_by_the_request_once_verification_is_done() -> None:
    from subscriptions.services.subscribing import _request_complete

    request = SubscriptionRequest.objects.create(
        mode="subscribe", topic="a.b", topic_key="a.b", callback="https://s.example/", secret=SECRET
    )
    _request_complete(request, SubscriptionRequest.State.FAILED, "no", 404)
    assert SubscriptionRequest.objects.get(pk=request.pk).secret == ""


def test_refusal_messages_never_echo_the_secret() -> None:
    long_secret = SECRET * 20
    body = urlencode(
        {"hub.mode": "subscribe", "hub.topic": "a.b", "hub.callback": "https://s.example/", "hub.secret": long_secret}
    )
    response = Client().post("/hub", body, content_type=FORM)
    assert response.status_code == 400
    assert SECRET.encode() not in response.content


# --- Deployment -----------------------------------------------------------------------------------


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "HUB_"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=60
    )


def test_secret_key_is_required_when_debug_is_off() -> None:
    result = _manage("check", env={"HUB_VAR_DIR": os.environ.get("HUB_VAR_DIR", "var")})
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is required" in result.stderr


def test_check_deploy_passes_with_a_production_environment() -> None:
    production = {
        "DJANGO_SECRET_KEY": "p" * 20 + "-production-grade-secret-key-with-entropy-9f8e7d6c5b4a",
        "DJANGO_ALLOWED_HOSTS": "hub.example.org",
        "HUB_URL": "https://hub.example.org/hub",
        "HUB_VAR_DIR": os.environ.get("HUB_VAR_DIR", "var"),
    }
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=production)
    assert result.returncode == 0, result.stdout + result.stderr


def test_logs_never_contain_a_subscription_secret(caplog, no_broker) -> None:
    # given a subscriber that answers verification and deliveries on 127.0.0.1
    from subscriptions import services
    from tests.support.subscriber import Subscriber

    server = Subscriber()
    try:
        caplog.set_level("DEBUG")
        # when it subscribes with a secret, is verified, and receives a signed delivery
        request = services.subscription_request(
            mode="subscribe", topic="secret.logs", callback=server.url("/cb?token=query-secret"), secret=SECRET
        )
        services.subscription_verify(request_id=request.pk)
        subscription = Subscription.objects.get()
        DeliveryFactory(subscription=subscription, notification__topic="secret.logs")
        services.delivery_attempt(delivery_id=subscription.deliveries.get().pk)
    finally:
        server.close()
    # then no log line carries the secret, nor the callback's query string
    assert server.deliveries("/cb")[0].headers["X-Hub-Signature"].startswith("sha256=")
    assert SECRET not in caplog.text
    assert "query-secret" not in caplog.text
