"""Secret rotation with an overlap, end to end: a real worker (with beat) and a real subscriber on 127.0.0.1."""

from datetime import timedelta

import pytest
from django.utils import timezone

from subscriptions.models import Subscription
from tests.support.auth import api_client
from tests.support.factories import SubscriptionFactory
from tests.support.subscriber import Received, Subscriber, wait_until
from websubhub.client import verify_signature, verify_standard_webhook

pytestmark = pytest.mark.e2e

OLD = "the-old-secret"


def _publish(content: object) -> None:
    response = api_client().post(
        "/api/notifications/", {"topic": "orders.created", "content": content}, content_type="application/json"
    )
    assert response.status_code == 202, response.content


def _arrived(subscriber: Subscriber, count: int) -> list[Received]:
    return wait_until(
        lambda: (received := subscriber.deliveries("/rotating")) and len(received) >= count and received,
        what=f"delivery {count}",
    )[count - 1]


def _verifies(secret: str | list[str], received: Received) -> bool:
    """The Standard Webhooks check of a subscriber holding `secret`, at the delivery's own time."""
    stamp = int(received.headers["webhook-timestamp"])
    return verify_standard_webhook(secret, received.body, received.headers, now=stamp)


def test_a_rotation_signs_with_both_secrets_during_the_grace_and_with_the_new_one_once_the_old_is_erased(
    hub, subscriber: Subscriber
) -> None:
    # given a subscriber that checks Standard Webhooks signatures with the old secret
    subscription = SubscriptionFactory(
        topic="orders", callback=subscriber.url("/rotating"), secret=OLD, standard_webhooks=True
    )
    _publish({"n": 1})
    assert _verifies(OLD, _arrived(subscriber, 1))

    # when the operator rotates to a random secret with an hour's grace
    response = api_client().post(
        f"/api/subscriptions/{subscription.pk}/rotate-secret", {"grace_seconds": 3600}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    new = response.json()["secret"]
    _publish({"n": 2})

    # then the delivery during the grace carries two signatures: one verifies with the old secret (the
    # subscriber not updated yet), one with the new; X-Hub-Signature is made with the new secret
    during = _arrived(subscriber, 2)
    assert during.body == b'{"n":2}'
    assert len(during.headers["webhook-signature"].split()) == 2
    assert _verifies(OLD, during) and _verifies(new, during)
    assert not _verifies("another-secret", during)
    assert verify_signature(new, during.body, during.headers["X-Hub-Signature"])
    assert verify_signature([new, OLD], during.body, during.headers["X-Hub-Signature"])

    # when the grace ends, beat's expiry run (every HUB_EXPIRE_INTERVAL, 1 s here) erases the old secret
    Subscription.objects.filter(pk=subscription.pk).update(
        previous_secret_expires_at=timezone.now() - timedelta(seconds=1)
    )
    wait_until(
        lambda: Subscription.objects.filter(pk=subscription.pk, previous_secret="").exists(),
        what="the old secret erased",
    )
    assert Subscription.objects.filter(pk=subscription.pk, previous_secret_expires_at=None).exists()
    _publish({"n": 3})

    # then deliveries verify with the new secret only
    after = _arrived(subscriber, 3)
    assert len(after.headers["webhook-signature"].split()) == 1
    assert _verifies(new, after) and not _verifies(OLD, after)
