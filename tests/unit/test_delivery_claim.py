"""One run per delivery: a second message of a delivery taken while the first runs steps aside (no second POST)."""

import threading

import pytest

from subscriptions import ratelimit, services
from subscriptions.models import Delivery
from tests.support.factories import DeliveryFactory, SubscriptionFactory
from tests.support.subscriber import Answer, Subscriber

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server():
    subscriber = Subscriber()
    yield subscriber
    subscriber.close()


def test_a_delivery_claimed_by_another_run_is_not_posted_by_a_second_one(server: Subscriber, settings) -> None:
    # given a pending delivery that another run (a re-sent message) holds right now
    settings.HUB_CALLBACK_RATE_LIMIT = "off"
    pending = DeliveryFactory(subscription=SubscriptionFactory(callback=server.url("/hook")))
    other = ratelimit.delivery_claim(pending.pk, 30)
    assert other
    # when the second run comes
    assert services.delivery_attempt(delivery_id=pending.pk) is None
    # then it posted nothing and left the delivery to the holder
    assert server.deliveries("/hook") == []
    assert Delivery.objects.get(pk=pending.pk).status == Delivery.Status.PENDING
    # and once the holder lets go, a run delivers it
    ratelimit.delivery_unclaim(pending.pk, other)
    assert services.delivery_attempt(delivery_id=pending.pk) is None
    assert len(server.deliveries("/hook")) == 1
    assert Delivery.objects.get(pk=pending.pk).status == Delivery.Status.DELIVERED


def test_two_runs_of_one_delivery_at_the_same_moment_post_once(server: Subscriber, settings) -> None:
    # given a slow subscriber, so that the two runs overlap for certain
    settings.HUB_CALLBACK_RATE_LIMIT = "off"
    server.post_statuses["/hook"] = [Answer(status=204, delay=0.5)] * 2
    pending = DeliveryFactory(subscription=SubscriptionFactory(callback=server.url("/hook")))
    # when two runs start together
    runs = [threading.Thread(target=services.delivery_attempt, kwargs={"delivery_id": pending.pk}) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=30)
    # then one POST
    assert len(server.deliveries("/hook")) == 1
    assert Delivery.objects.get(pk=pending.pk).status == Delivery.Status.DELIVERED


def test_a_claim_is_only_given_back_by_its_holder() -> None:
    mine = ratelimit.delivery_claim(987654321, 30)
    ratelimit.delivery_unclaim(987654321, "someone-else")
    assert ratelimit.delivery_claim(987654321, 30) is None
    ratelimit.delivery_unclaim(987654321, mine)
    assert ratelimit.delivery_claim(987654321, 30)
