"""A delivery whose callback has every place in flight taken looks again sooner or later by how long the oldest
request has been open: a callback that hangs until the timeout is not asked every second (on Redis)."""

import uuid

import pytest
from django.conf import settings

from subscriptions import http, ratelimit, services
from subscriptions.models import Delivery
from subscriptions.ratelimit import Admission, Verdict
from subscriptions.services import delivering
from tests.support.factories import DeliveryFactory, SubscriptionFactory
from tests.support.subscriber import Subscriber

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (REDIS_URL)")


def _open_places(callback: str, count: int, *, opened_ago: float, lease: float = 30.0) -> None:
    """Take `count` of the callback's places in flight, as requests opened `opened_ago` seconds ago."""
    for _ in range(count):
        admission = ratelimit.attempt_admit(str(uuid.uuid4()), callback, lease=lease, cap=count, rate=None)
        assert admission.verdict is Verdict.ADMITTED
        key = f"hub:inflight:{ratelimit.callback_key(callback)}"
        ratelimit.redis_client().zincrby(key, -opened_ago * 1000, admission.token)


@pytest.mark.parametrize(
    ("open_for", "wait", "expected"),
    [
        (0.05, 19.95, delivering.IN_FLIGHT_RECHECK_SECONDS),  # a busy callback that answers: look again soon
        (6.0, 14.0, 6.0),  # open for 6 s: wait as long again
        (18.0, 2.0, 2.0),  # never after the oldest place is due back
        (0.0, 0.2, 0.2),
    ],
)
def test_the_recheck_grows_with_how_long_the_oldest_request_has_been_open(
    open_for: float, wait: float, expected: float
) -> None:
    admission = Admission(Verdict.IN_FLIGHT_FULL, wait=wait, open_for=open_for)
    assert delivering.in_flight_recheck(admission) == pytest.approx(expected)


@pytest.mark.parametrize(("max_countdown", "expected"), [(30, 30.0), (0, delivering.IN_FLIGHT_RECHECK_SECONDS)])
def test_the_recheck_is_never_longer_than_a_countdown_the_broker_may_hold(
    settings, max_countdown: int, expected: float
) -> None:
    # given a callback (HUB_HTTP_READ_TIMEOUT 300 s) whose oldest request has been open for 100 s of its 310 s lease
    settings.HUB_BROKER_MAX_COUNTDOWN = max_countdown
    admission = Admission(Verdict.IN_FLIGHT_FULL, wait=210.0, open_for=100.0)
    # then the delivery's wait, a countdown, stays within what the broker may hold (1 s when it holds none)
    assert delivering.in_flight_recheck(admission) == pytest.approx(expected)


@needs_redis
def test_a_full_callback_says_how_long_its_oldest_request_has_been_open() -> None:
    # given a callback whose one place is held by a request opened 4 s ago, on a 30 s lease
    callback = f"https://in-flight.example/{uuid.uuid4()}"
    _open_places(callback, 1, opened_ago=4.0)
    # when another delivery asks for a place
    admission = ratelimit.attempt_admit(str(uuid.uuid4()), callback, lease=30, cap=1, rate=None)
    # then it is refused, told when the place is due back and how long the request has been open
    assert admission.verdict is Verdict.IN_FLIGHT_FULL
    assert 4.0 <= admission.open_for < 5.0
    assert 25.0 < admission.wait <= 26.0


@needs_redis
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("opened_ago", "low", "high"), [(0.0, 0.5, 1.0), (6.0, 3.0, 6.5)])
def test_a_delivery_behind_requests_open_for_long_looks_again_later(
    subscriber: Subscriber, settings, opened_ago: float, low: float, high: float
) -> None:
    # given a callback (not failing) whose 4 places in flight are all taken by requests opened `opened_ago` s ago
    settings.HUB_CALLBACK_RATE_LIMIT = "off"
    settings.HUB_CALLBACK_MAX_IN_FLIGHT = 4
    pending = DeliveryFactory(subscription=SubscriptionFactory(callback=subscriber.url("/hook")))
    lease = http.total_timeout() + delivering.IN_FLIGHT_LEASE_MARGIN  # what a run takes its place for
    _open_places(pending.callback, 4, opened_ago=opened_ago, lease=lease)
    # when its delivery runs
    resend = services.delivery_attempt(delivery_id=pending.pk)
    # then it posts nothing and comes back after about as long as the oldest request has been open (at least 0.5 s)
    assert resend is not None
    assert low <= resend.countdown <= high
    assert subscriber.deliveries("/hook") == []
    assert Delivery.objects.get(pk=pending.pk).status == Delivery.Status.PENDING
