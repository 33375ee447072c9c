"""Secret rotation with an overlap: POST /api/subscriptions/<id>/rotate-secret, the signatures during the grace,
the erasure after it, re-subscribing, the admin's button and the subscriber's check of several secrets."""

import base64
import hashlib
import hmac
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from subscriptions import delivery, rules, selectors, services
from subscriptions.models import Delivery, Subscription
from tasks.periodic import expire_subscriptions
from tests.support.auth import api_client, staff_client
from tests.support.factories import DeliveryFactory, SubscriptionFactory, SubscriptionRequestFactory
from tests.support.subscriber import Subscriber
from websubhub.client import verify_signature, verify_standard_webhook

BODY = b'{"order":42}'
STAMP = 1_700_000_000


def _headers(secret: str, previous_secret: str = "") -> dict[str, str]:
    return delivery.headers(
        content_type="application/json",
        hub_url="https://hub.example/hub",
        topic="orders",
        delivery_id="msg_1",
        body=BODY,
        secret=secret,
        algorithm="sha256",
        standard_webhooks=True,
        timestamp=STAMP,
        previous_secret=previous_secret,
    )


def _v1(secret: str) -> str:
    digest = hmac.new(secret.encode(), f"msg_1.{STAMP}.".encode() + BODY, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _rotate(client, subscription_id: int, payload: dict | None = None):
    return client.post(
        f"/api/subscriptions/{subscription_id}/rotate-secret", payload or {}, content_type="application/json"
    )


# --- what a delivery carries ----------------------------------------------------------------


def test_during_the_grace_webhook_signature_carries_both_secrets_and_x_hub_signature_the_new_one() -> None:
    headers = _headers("new", previous_secret="old")
    assert headers["webhook-signature"] == f"{_v1('new')} {_v1('old')}"
    assert headers["X-Hub-Signature"] == delivery.signature("new", BODY, "sha256")


@pytest.mark.parametrize(("secret", "previous"), [("new", ""), ("same", "same")])
def test_without_another_previous_secret_one_signature_is_sent(secret: str, previous: str) -> None:
    assert _headers(secret, previous_secret=previous)["webhook-signature"] == _v1(secret)


def test_a_previous_secret_never_signs_alone() -> None:
    headers = _headers("", previous_secret="old")
    assert "webhook-signature" not in headers and "X-Hub-Signature" not in headers


def test_a_previous_secret_signs_only_until_its_expiry() -> None:
    now = timezone.now()
    assert delivery.secret_in_grace("old", now + timedelta(seconds=1), now=now) == "old"
    assert delivery.secret_in_grace("old", now, now=now) == ""
    assert delivery.secret_in_grace("old", None, now=now) == ""
    assert delivery.secret_in_grace("", now + timedelta(days=1), now=now) == ""


@pytest.mark.django_db
def test_a_delivery_in_the_grace_verifies_with_either_secret_and_one_after_it_with_the_new_one_only(
    subscriber: Subscriber, settings
) -> None:
    # given a subscription rotated from "old" to "new" with a grace period, Standard Webhooks on
    settings.HUB_CALLBACK_RATE_LIMIT = "off"
    subscription = SubscriptionFactory(
        topic="orders", callback=subscriber.url("/cb"), secret="old", standard_webhooks=True
    )
    services.subscription_rotate_secret(subscription=subscription, secret="new", grace_seconds=3600)
    # when a delivery is made during the grace
    during = DeliveryFactory(subscription=subscription, notification__topic="orders")
    with CaptureQueriesContext(connection) as queries:
        services.delivery_attempt(delivery_id=during.pk)
    # (the previous secret comes with the run's one SELECT: no query more than test_deliver_queries allows)
    assert len(queries) <= 3, [query["sql"] for query in queries]
    # and another once the grace is over (not yet erased by the expiry run)
    Subscription.objects.filter(pk=subscription.pk).update(
        previous_secret_expires_at=timezone.now() - timedelta(seconds=1)
    )
    after = DeliveryFactory(subscription=subscription, notification__topic="orders")
    services.delivery_attempt(delivery_id=after.pk)
    # then the first carries a signature with each secret, the second with the new one only
    first, second = subscriber.deliveries("/cb")
    assert len(first.headers["webhook-signature"].split()) == 2
    for secret in ("new", "old"):
        assert verify_standard_webhook(secret, first.body, first.headers, now=int(first.headers["webhook-timestamp"]))
    assert verify_signature("new", first.body, first.headers["X-Hub-Signature"])
    assert len(second.headers["webhook-signature"].split()) == 1
    stamp = int(second.headers["webhook-timestamp"])
    assert verify_standard_webhook("new", second.body, second.headers, now=stamp)
    assert not verify_standard_webhook("old", second.body, second.headers, now=stamp)
    assert Delivery.objects.filter(status=Delivery.Status.DELIVERED).count() == 2


@pytest.mark.django_db
def test_the_run_reads_the_previous_secret_in_its_one_statement() -> None:
    ends = timezone.now() + timedelta(hours=1)
    subscription = SubscriptionFactory(secret="new", previous_secret="old", previous_secret_expires_at=ends)
    work = selectors.delivery_work(DeliveryFactory(subscription=subscription).pk)
    assert (work.secret, work.previous_secret, work.previous_secret_expires_at) == ("new", "old", ends)


# --- the service ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_rotating_keeps_the_old_secret_for_the_grace_and_a_second_rotation_replaces_it() -> None:
    subscription = SubscriptionFactory(secret="first")
    before = timezone.now()
    rotation = services.subscription_rotate_secret(subscription=subscription, secret="second", grace_seconds=600)
    stored = Subscription.objects.get(pk=subscription.pk)
    assert (stored.secret, stored.previous_secret) == ("second", "first")
    assert before + timedelta(seconds=600) <= stored.previous_secret_expires_at <= timezone.now() + timedelta(600)
    assert rotation.previous_secret_expires_at == stored.previous_secret_expires_at and not rotation.generated
    # a second rotation during the overlap: only the current and the replaced secret sign
    services.subscription_rotate_secret(subscription=subscription, secret="third", grace_seconds=600)
    stored.refresh_from_db()
    assert (stored.secret, stored.previous_secret) == ("third", "second")


@pytest.mark.django_db
def test_rotating_to_the_current_secret_changes_nothing_so_a_retried_request_keeps_the_overlap() -> None:
    subscription = SubscriptionFactory(secret="old")
    first = services.subscription_rotate_secret(subscription=subscription, secret="new", grace_seconds=600)
    again = services.subscription_rotate_secret(subscription=subscription, secret="new", grace_seconds=5)
    stored = Subscription.objects.get(pk=subscription.pk)
    assert (stored.secret, stored.previous_secret) == ("new", "old")
    assert again.previous_secret_expires_at == first.previous_secret_expires_at == stored.previous_secret_expires_at


@pytest.mark.django_db
@pytest.mark.parametrize(("old", "grace"), [("", 600), ("old", 0)])
def test_without_a_secret_before_or_without_grace_the_new_secret_applies_alone(old: str, grace: int) -> None:
    subscription = SubscriptionFactory(secret=old)
    rotation = services.subscription_rotate_secret(subscription=subscription, secret="new", grace_seconds=grace)
    stored = Subscription.objects.get(pk=subscription.pk)
    assert (stored.secret, stored.previous_secret, stored.previous_secret_expires_at) == ("new", "", None)
    assert rotation.previous_secret_expires_at is None


@pytest.mark.django_db
def test_a_random_secret_is_a_standard_webhooks_secret_of_32_bytes() -> None:
    subscription = SubscriptionFactory(secret="old")
    rotation = services.subscription_rotate_secret(subscription=subscription)
    assert rotation.generated and rotation.secret.startswith("whsec_")
    assert len(base64.b64decode(rotation.secret.removeprefix("whsec_"))) == 32
    assert Subscription.objects.get(pk=subscription.pk).secret == rotation.secret
    assert services.subscription_rotate_secret(subscription=subscription).secret != rotation.secret


@pytest.mark.django_db
def test_the_expiry_run_erases_previous_secrets_whose_grace_ended_and_keeps_the_others() -> None:
    now = timezone.now()
    ended = SubscriptionFactory(secret="b", previous_secret="a", previous_secret_expires_at=now - timedelta(seconds=1))
    running = SubscriptionFactory(secret="d", previous_secret="c", previous_secret_expires_at=now + timedelta(hours=1))
    # when beat's hub.expire_subscriptions runs
    expire_subscriptions()
    ended.refresh_from_db()
    running.refresh_from_db()
    assert (ended.secret, ended.previous_secret, ended.previous_secret_expires_at) == ("b", "", None)
    assert (running.previous_secret, running.previous_secret_expires_at) == ("c", now + timedelta(hours=1))


@pytest.mark.django_db
@pytest.mark.parametrize(("new_secret", "kept"), [("renewed-with-the-same", True), ("subscriber-chose-another", False)])
def test_resubscribing_with_another_secret_swaps_it_at_once_and_ends_the_overlap(
    subscriber: Subscriber, no_broker, new_secret: str, kept: bool
) -> None:
    # given a subscription during a rotation's overlap
    ends = timezone.now() + timedelta(hours=1)
    subscription = SubscriptionFactory(
        topic="orders",
        callback=subscriber.url("/cb"),
        secret="renewed-with-the-same",
        previous_secret="old",
        previous_secret_expires_at=ends,
    )
    # when the subscriber re-subscribes through WebSub (verified by its callback)
    request = SubscriptionRequestFactory(topic="orders", callback=subscription.callback, secret=new_secret)
    services.subscription_verify(request_id=request.pk)
    # then its secret applies; another one ends the overlap at once, the same one (a renewal) leaves it
    subscription.refresh_from_db()
    assert subscription.secret == new_secret
    expected = ("old", ends) if kept else ("", None)
    assert (subscription.previous_secret, subscription.previous_secret_expires_at) == expected


# --- the API ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_api_rotates_to_a_random_secret_shown_once(client) -> None:
    subscription = SubscriptionFactory(secret="old")
    before = timezone.now()
    response = _rotate(client, subscription.pk, {"grace_seconds": 86400})
    assert response.status_code == 200, response.content
    body = response.json()
    stored = Subscription.objects.get(pk=subscription.pk)
    assert body["secret"] == stored.secret and body["secret"].startswith("whsec_")
    assert body["id"] == subscription.pk and body["has_secret"] is True
    assert body["previous_secret_expires_at"] == stored.previous_secret_expires_at.isoformat().replace("+00:00", "Z")
    assert stored.previous_secret_expires_at >= before + timedelta(days=1)
    # it is shown once: the subscription's own page never shows it, nor the old one
    page = client.get(f"/api/subscriptions/{subscription.pk}/").content.decode()
    assert stored.secret not in page and '"old"' not in page
    assert "previous_secret_expires_at" in page


@pytest.mark.django_db
def test_the_api_never_returns_a_secret_the_caller_gave_and_defaults_to_a_day(client) -> None:
    subscription = SubscriptionFactory(secret="old")
    response = _rotate(client, subscription.pk, {"secret": "mine-and-only-mine"})
    assert response.status_code == 200, response.content
    assert response.json()["secret"] is None
    assert "mine-and-only-mine" not in response.content.decode()
    stored = Subscription.objects.get(pk=subscription.pk)
    assert (stored.secret, stored.previous_secret) == ("mine-and-only-mine", "old")
    grace = stored.previous_secret_expires_at - timezone.now()
    assert timedelta(seconds=rules.ROTATION_GRACE_SECONDS_DEFAULT - 60) < grace <= timedelta(days=1)


@pytest.mark.django_db
def test_a_post_without_a_body_rotates_to_a_random_secret(client) -> None:
    subscription = SubscriptionFactory(secret="old")
    response = client.generic("POST", f"/api/subscriptions/{subscription.pk}/rotate-secret")
    assert response.status_code == 200, response.content
    assert response.json()["secret"] == Subscription.objects.get(pk=subscription.pk).secret


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"grace_seconds": -1}, "grace_seconds", "from 0 to 2592000 (30 days)"),
        ({"grace_seconds": 2592001}, "grace_seconds", "from 0 to 2592000 (30 days)"),
        ({"grace_seconds": "a day"}, "grace_seconds", "A valid integer is required."),
        ({"grace_seconds": None}, "grace_seconds", "may not be null"),
        ({"secret": ""}, "secret", "secret cannot be empty: leave it out for a random one"),
        ({"secret": "x" * 200}, "secret", "secret must be shorter than 200 bytes"),
        ({"secret": "é" * 100}, "secret", "secret must be shorter than 200 bytes"),
        ({"secret": "a\x00b"}, "secret", "Null characters are not allowed."),
        ({"grace": 60}, "grace", "grace is not a field of a rotation; the fields are secret, grace_seconds"),
    ],
)
def test_bad_rotations_are_refused_with_400_naming_the_field(client, payload, field, message) -> None:
    subscription = SubscriptionFactory(secret="old")
    response = _rotate(client, subscription.pk, payload)
    assert response.status_code == 400, response.content
    assert message in str(response.json()["errors"][field])
    assert Subscription.objects.get(pk=subscription.pk).secret == "old"


@pytest.mark.django_db
def test_a_body_that_is_not_an_object_is_refused_with_400(client) -> None:
    subscription = SubscriptionFactory(secret="old")
    response = _rotate(client, subscription.pk, ["secret"])
    assert response.status_code == 400
    assert response.json()["detail"]


@pytest.mark.django_db
def test_an_unknown_subscription_gets_404_an_ended_lease_409_and_a_token_without_manage_403(client) -> None:
    assert _rotate(client, 987654).status_code == 404
    expired = SubscriptionFactory(secret="old", expired=True)
    response = _rotate(client, expired.pk)
    assert response.status_code == 409 and "lease has ended" in response.json()["detail"]
    subscription = SubscriptionFactory(secret="old")
    assert _rotate(api_client(manage=False), subscription.pk).status_code == 403
    assert Subscription.objects.get(pk=subscription.pk).secret == "old"


@pytest.mark.django_db
def test_the_schema_documents_the_rotation(client) -> None:
    schema = client.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/subscriptions/{id}/rotate-secret"]["post"]
    assert {"200", "400", "404", "409"} <= set(operation["responses"])
    request = schema["components"]["schemas"]["RotateSecretRequest"]["properties"]
    assert request["grace_seconds"]["maximum"] == rules.ROTATION_GRACE_SECONDS_MAX
    assert request["grace_seconds"]["minimum"] == 0
    answer = schema["components"]["schemas"]["RotatedSecret"]["properties"]
    assert answer["secret"]["nullable"] is True
    assert "previous_secret_expires_at" in schema["components"]["schemas"]["Subscription"]["properties"]


# --- the admin --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_admin_rotates_to_a_random_secret_and_shows_it_once(admin_client) -> None:
    subscription = SubscriptionFactory(secret="the-0ld-s3cret")
    page = admin_client.get(f"/admin/subscriptions/subscription/{subscription.pk}/change/")
    assert b"Rotate secret" in page.content
    url = f"/admin/subscriptions/subscription/{subscription.pk}/rotate-secret/"
    form = admin_client.get(url)
    assert form.status_code == 200 and b'name="grace_seconds"' in form.content
    response = admin_client.post(url, {"secret": "", "grace_seconds": "3600"})
    assert response.status_code == 200
    stored = Subscription.objects.get(pk=subscription.pk)
    assert stored.secret.startswith("whsec_") and stored.previous_secret == "the-0ld-s3cret"
    assert stored.secret.encode() in response.content and b"not shown again" in response.content
    assert "no-store" in response["Cache-Control"]
    # the subscription's page says an overlap runs, and shows neither secret
    page = admin_client.get(f"/admin/subscriptions/subscription/{subscription.pk}/change/").content
    assert b"the previous secret also signs webhook-signature until" in page
    assert stored.secret.encode() not in page and b"the-0ld-s3cret" not in page


@pytest.mark.django_db
def test_the_admin_rotates_to_a_given_secret_without_showing_it_and_refuses_a_bad_grace(admin_client) -> None:
    subscription = SubscriptionFactory(secret="old")
    url = f"/admin/subscriptions/subscription/{subscription.pk}/rotate-secret/"
    refused = admin_client.post(url, {"secret": "chosen-one", "grace_seconds": "9999999"})
    assert refused.status_code == 200 and b"from 0 to 2592000 (30 days)" in refused.content
    assert b"chosen-one" not in refused.content
    too_long = admin_client.post(url, {"secret": "y" * 200, "grace_seconds": "60"})
    assert too_long.status_code == 200 and b"secret must be shorter than 200 bytes" in too_long.content
    assert b"y" * 200 not in too_long.content
    assert Subscription.objects.get(pk=subscription.pk).secret == "old"
    response = admin_client.post(url, {"secret": "chosen-one", "grace_seconds": "60"})
    assert response.status_code == 302
    assert Subscription.objects.get(pk=subscription.pk).secret == "chosen-one"


@pytest.mark.django_db
def test_the_admin_rotation_needs_the_change_permission() -> None:
    subscription = SubscriptionFactory(secret="old")
    viewer = staff_client("viewer", "view_subscription", "view_delivery")
    assert b"Rotate secret" not in viewer.get(f"/admin/subscriptions/subscription/{subscription.pk}/change/").content
    url = f"/admin/subscriptions/subscription/{subscription.pk}/rotate-secret/"
    assert viewer.post(url, {"grace_seconds": "60"}).status_code == 403
    assert Subscription.objects.get(pk=subscription.pk).secret == "old"


# --- the subscriber's check (websubhub/client.py) -----------------------------------------------


def test_verify_signature_accepts_any_of_several_secrets() -> None:
    header = delivery.signature("new", BODY, "sha256")
    assert verify_signature(["old", "new"], BODY, header)
    assert verify_signature(("new", b"old"), BODY, header)
    assert not verify_signature(["old", "older"], BODY, header)
    assert not verify_signature([], BODY, header)


def test_verify_standard_webhook_accepts_any_secret_against_any_of_the_listed_signatures() -> None:
    headers = _headers("new", previous_secret="old")
    assert verify_standard_webhook(["new", "other"], BODY, headers, now=STAMP)
    assert verify_standard_webhook(("other", "old"), BODY, headers, now=STAMP)
    assert not verify_standard_webhook(["other", "another"], BODY, headers, now=STAMP)
    assert not verify_standard_webhook([], BODY, headers, now=STAMP)
    # a list with junk around a good signature still verifies; a tampered body does not
    junk = {**headers, "webhook-signature": f"v2,abc  v1,é {_v1('old')}"}
    assert verify_standard_webhook("old", BODY, junk, now=STAMP)
    assert not verify_standard_webhook(["new", "old"], BODY + b" ", headers, now=STAMP)
