"""A delivery parked behind a paused or failing subscription is never left behind by the release that should send it.

Each test runs the service functions in the racy order, with the database and no
sleeps: a delivery reads the subscription as paused (or failing), then another
worker's probe succeeds (or an operator resumes) and releases the parked
deliveries, then this delivery writes its park. Before the fix the park came too
late for the release and the delivery waited for its due time (up to an hour).
"""

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from subscriptions import ratelimit, services
from subscriptions.models import Delivery, Subscription
from subscriptions.services import breaker, delivering, publishing, queueing
from tests.support.factories import DeliveryFactory, NotificationFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db

# A send counts when it runs within this many seconds (a Resend's countdown).
SOON_SECONDS = 1.0


@pytest.fixture
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every delivery id handed to deliveries_enqueue; nothing reaches a broker."""
    ids: list[int] = []
    monkeypatch.setattr(queueing, "deliveries_enqueue", lambda batch, retries=None: ids.extend(batch))
    return ids


def _probe_succeeds(subscription: Subscription) -> None:
    """Another worker's probe was delivered."""
    breaker.Breaker.of(Subscription.objects.get(pk=subscription.pk)).succeeded(resumed=True)


def _operator_resumes(subscription: Subscription) -> None:
    services.subscription_resume(subscription=Subscription.objects.get(pk=subscription.pk))


def _paused(kind: str) -> Subscription:
    subscription = SubscriptionFactory()
    if kind == "probe":
        # Another delivery holds the probe (claimed: resume_after is the end of its window).
        Subscription.objects.filter(pk=subscription.pk).update(
            state=Subscription.State.PAUSED,
            consecutive_failures=6,
            resume_after=timezone.now() + timedelta(seconds=breaker.PROBE_WINDOW_SECONDS),
        )
    else:
        services.subscription_pause(subscription=subscription)
    return Subscription.objects.get(pk=subscription.pk)


def _times_sent(delivery: Delivery, step: services.Resend | None, enqueued: list[int]) -> int:
    """How many times the delivery is on its way: re-sent by its own run, or enqueued by a release."""
    itself = step is not None and step.countdown <= SOON_SECONDS
    return int(itself) + enqueued.count(delivery.pk)


def _once(hook: Callable[[], None]) -> Callable[[], None]:
    fired: list[bool] = []

    def run() -> None:
        if not fired:
            fired.append(True)
            hook()

    return run


@pytest.mark.parametrize("release", ["probe", "operator"])
@pytest.mark.parametrize("moment", ["before the park", "after the park"])
def test_delivery_parking_while_the_subscription_is_released_is_sent_once(
    release: str, moment: str, enqueued: list[int], monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks
) -> None:
    # given a delivery of a paused subscription
    subscription = _paused(release)
    delivery = DeliveryFactory(subscription=subscription, callback=subscription.callback)
    released = _once(lambda: (_probe_succeeds if release == "probe" else _operator_resumes)(subscription))
    if moment == "before the park":
        # the release runs after this delivery read the subscription as paused, before it parks
        real_claim = breaker.Breaker.probe_claim

        def claim_then_release(*args: object, **kwargs: object) -> bool:
            claimed = real_claim(*args, **kwargs)
            released()
            return claimed

        monkeypatch.setattr(breaker.Breaker, "probe_claim", claim_then_release)
    else:
        # the release runs just after this delivery parked
        real_update = breaker.delivery_update

        def park_then_release(delivery_id: int, **fields: object) -> None:
            real_update(delivery_id, **fields)
            if "due_at" in fields:
                released()

        monkeypatch.setattr(breaker, "delivery_update", park_then_release)
    # when the delivery runs
    with django_capture_on_commit_callbacks(execute=True):
        step = services.delivery_attempt(delivery_id=delivery.pk)
    # then it is sent again at once, exactly once, and not left parked
    assert Subscription.objects.get(pk=subscription.pk).state == Subscription.State.ACTIVE
    assert _times_sent(delivery, step, enqueued) == 1, (step, enqueued)
    assert Delivery.objects.get(pk=delivery.pk).due_at <= timezone.now()


def test_delivery_parking_behind_a_failing_callback_that_answers_meanwhile_is_sent_once(
    enqueued: list[int], monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks, settings
) -> None:
    # given a failing callback (one request in flight at a time) whose request in flight holds the place
    settings.HUB_CALLBACK_MAX_IN_FLIGHT = 4
    subscription = SubscriptionFactory(consecutive_failures=2)
    delivery = DeliveryFactory(subscription=subscription, callback=subscription.callback)

    def place_taken_by_a_request_that_then_succeeds(
        delivery_id: int, callback: str, *, lease: float, cap: int, rate: object
    ) -> ratelimit.Admission:
        # the request in flight is delivered and releases what waits, before this delivery parks
        breaker.Breaker.of(Subscription.objects.get(pk=subscription.pk)).succeeded(resumed=False)
        return ratelimit.Admission(ratelimit.Verdict.IN_FLIGHT_FULL, wait=lease)

    monkeypatch.setattr(delivering.ratelimit, "attempt_admit", place_taken_by_a_request_that_then_succeeds)
    # when the delivery runs
    with django_capture_on_commit_callbacks(execute=True):
        step = services.delivery_attempt(delivery_id=delivery.pk)
    # then it is sent again at once, not parked for the lease
    assert _times_sent(delivery, step, enqueued) == 1, (step, enqueued)
    assert Delivery.objects.get(pk=delivery.pk).due_at <= timezone.now()


def test_delivery_of_a_subscription_still_paused_stays_parked_until_the_probe(
    enqueued: list[int], django_capture_on_commit_callbacks
) -> None:
    subscription = _paused("probe")
    delivery = DeliveryFactory(subscription=subscription, callback=subscription.callback)
    with django_capture_on_commit_callbacks(execute=True):
        step = services.delivery_attempt(delivery_id=delivery.pk)
    assert step is None and enqueued == []
    assert Delivery.objects.get(pk=delivery.pk).due_at == subscription.resume_after
    # and the probe's success sends it
    with django_capture_on_commit_callbacks(execute=True):
        _probe_succeeds(subscription)
    assert enqueued == [delivery.pk]


def test_spread_to_a_subscription_resumed_while_spreading_sends_its_delivery(
    enqueued: list[int], monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks
) -> None:
    # given a paused subscription, and a notification being spread
    subscription = _paused("probe")
    Subscription.objects.filter(pk=subscription.pk).update(topic="race.spread", topic_key="race.spread")
    notification = NotificationFactory(topic="race.spread")
    real_matching = publishing.subscriptions_matching

    def matching_then_probe_succeeds(keys: list[str], *, now: object) -> Iterator[object]:
        # spread read the subscription as paused; the probe succeeds before the delivery row exists
        yield from real_matching(keys, now=now)
        _probe_succeeds(subscription)

    monkeypatch.setattr(publishing, "subscriptions_matching", matching_then_probe_succeeds)
    # when the spread writes its deliveries
    with django_capture_on_commit_callbacks(execute=True):
        services.notification_spread(notification_id=notification.pk)
    # then the delivery is sent, not parked until the old probe time
    delivery = Delivery.objects.get(notification=notification)
    assert enqueued == [delivery.pk]
    assert delivery.due_at <= timezone.now()
