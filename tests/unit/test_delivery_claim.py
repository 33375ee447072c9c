"""One run per delivery: a second message of a delivery taken while the first runs steps aside (no second POST)."""

import threading
import uuid

import pytest
from django.db import connection

from subscriptions import ratelimit, services
from subscriptions.models import Delivery
from subscriptions.services import delivering
from tests.support.factories import DeliveryFactory, SubscriptionFactory
from tests.support.subscriber import Answer, Subscriber

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_delivery_claimed_by_another_run_is_not_posted_by_a_second_one(subscriber: Subscriber, settings) -> None:
    # given a pending delivery that another run (a re-sent message) holds right now
    settings.HUB_CALLBACK_RATE_LIMIT = "off"
    pending = DeliveryFactory(subscription=SubscriptionFactory(callback=subscriber.url("/hook")))
    other = ratelimit.attempt_admit(str(pending.uuid), pending.callback, lease=30, cap=0, rate=None)
    assert other.verdict is ratelimit.Verdict.ADMITTED
    # when the second run comes
    assert services.delivery_attempt(delivery_id=pending.pk) is None
    # then it posted nothing and left the delivery to the holder
    assert subscriber.deliveries("/hook") == []
    assert Delivery.objects.get(pk=pending.pk).status == Delivery.Status.PENDING
    # and once the holder lets go, a run delivers it
    ratelimit.attempt_give_back(str(pending.uuid), pending.callback, other, settled=False)
    assert services.delivery_attempt(delivery_id=pending.pk) is None
    assert len(subscriber.deliveries("/hook")) == 1
    assert Delivery.objects.get(pk=pending.pk).status == Delivery.Status.DELIVERED


def test_two_runs_of_one_delivery_at_the_same_moment_post_once(subscriber: Subscriber, settings) -> None:
    # given a slow subscriber, so that the two runs overlap for certain
    settings.HUB_CALLBACK_RATE_LIMIT = "off"
    subscriber.post_statuses["/hook"] = [Answer(status=204, delay=0.5)] * 2
    pending = DeliveryFactory(subscription=SubscriptionFactory(callback=subscriber.url("/hook")))

    # when two runs start together
    def run() -> None:
        try:
            services.delivery_attempt(delivery_id=pending.pk)
        finally:
            connection.close()  # the thread's own: a pooled connection left checked out outlives the test

    runs = [threading.Thread(target=run) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=30)
    # then one POST
    assert len(subscriber.deliveries("/hook")) == 1
    assert Delivery.objects.get(pk=pending.pk).status == Delivery.Status.DELIVERED


def test_a_run_that_read_the_row_just_before_another_settled_it_does_not_post_again(
    subscriber: Subscriber, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a delivery read as pending by a run (its snapshot), then delivered by another run
    settings.HUB_CALLBACK_RATE_LIMIT = "off"
    pending = DeliveryFactory(subscription=SubscriptionFactory(callback=subscriber.url("/hook")))
    stale = delivering.delivery_work(pending.pk)
    assert services.delivery_attempt(delivery_id=pending.pk) is None
    assert len(subscriber.deliveries("/hook")) == 1
    # when the run that read it before comes to claim it
    monkeypatch.setattr(delivering, "delivery_work", lambda delivery_id: stale)
    assert services.delivery_attempt(delivery_id=pending.pk) is None
    # then the settled delivery's claim (a tombstone for a few seconds) stops a second POST
    assert len(subscriber.deliveries("/hook")) == 1


def test_a_claim_is_only_given_back_by_its_holder() -> None:
    key = uuid.uuid4().hex

    def admit() -> ratelimit.Admission:
        return ratelimit.attempt_admit(key, "http://x.test/", lease=30, cap=0, rate=None)

    mine = admit()
    assert mine.verdict is ratelimit.Verdict.ADMITTED
    someone_else = ratelimit.Admission(ratelimit.Verdict.ADMITTED, token="someone-else")
    ratelimit.attempt_give_back(key, "http://x.test/", someone_else, settled=False)
    assert admit().verdict is ratelimit.Verdict.BUSY
    ratelimit.attempt_give_back(key, "http://x.test/", mine, settled=False)
    again = admit()
    assert again.verdict is ratelimit.Verdict.ADMITTED
    ratelimit.attempt_give_back(key, "http://x.test/", again, settled=False)
