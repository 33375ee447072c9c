"""The sweeper's broker marker (services.hub_sweep, hub_recover), called as plain functions against the real broker.

Each test keeps its own marker key, so the session's end-to-end worker (which
sweeps every second against the same broker) never touches it.
"""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from subscriptions import services
from subscriptions.models import Delivery, Notification
from subscriptions.services import queueing, sweeping
from tests.support.factories import DeliveryFactory, NotificationFactory, SubscriptionRequestFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def marker(monkeypatch: pytest.MonkeyPatch, settings) -> str:
    if not settings.REDIS_URL or settings.CELERY_BROKER_URL != settings.REDIS_URL:
        pytest.skip("the broker marker is kept on a Redis broker only")
    key = f"websubhub:test-marker:{uuid.uuid4().hex}"
    monkeypatch.setattr(sweeping, "BROKER_MARKER_KEY", key)
    monkeypatch.setattr(sweeping, "BROKER_BACKLOG_KEY", f"{key}:backlog")
    yield key
    with sweeping._broker_redis() as client:
        client.delete(key, f"{key}:backlog")


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict, float | None]]:
    """Every task the sweep sends (name, kwargs, countdown); nothing reaches a queue."""
    tasks: list[tuple[str, dict, float | None]] = []

    def send_task(name: str, *, kwargs: dict, countdown: float | None = None, **options: object) -> None:
        tasks.append((name, kwargs, countdown))

    monkeypatch.setattr(sweeping.celery_app, "send_task", send_task)
    # Deliver messages built from a template bypass send_task: recorded alike.
    monkeypatch.setattr(
        queueing.DeliverMessages,
        "publish_many",
        lambda self, delivery_ids, queue: tasks.extend(("hub.deliver", {"delivery_id": i}, None) for i in delivery_ids),
    )
    return tasks


def _set_marker(key: str, value: str) -> None:
    with sweeping._broker_redis() as client:
        client.set(key, value)


def _owed(settings) -> dict[str, object]:
    """Work owed but not late: a new notification, a new request, a due delivery, one due soon, one due later."""
    now = timezone.now()
    grace = settings.HUB_SWEEP_GRACE_SECONDS
    return {
        "notification": NotificationFactory(),
        "request": SubscriptionRequestFactory(),
        "due": DeliveryFactory(),
        "retry_soon": DeliveryFactory(attempts=2, due_at=now + timedelta(seconds=grace / 2)),
        "later": DeliveryFactory(due_at=now + timedelta(seconds=grace * 10)),
        "delivered": DeliveryFactory(status=Delivery.Status.DELIVERED),
    }


def test_sweep_with_the_marker_in_place_resends_nothing_that_is_not_late(marker: str, sent: list, settings) -> None:
    # given a healthy broker (its marker in place) and work owed for less than the grace period
    settings.HUB_SWEEP_GRACE_SECONDS = 120
    _set_marker(marker, sweeping.BROKER_MARKER_OK)
    _owed(settings)
    # when the sweeper runs, however often
    results = [services.hub_sweep() for _ in range(3)]
    # then it sends nothing: the broker still holds all of it
    assert results == [0, 0, 0] and sent == []


def test_sweep_that_finds_the_marker_gone_resends_everything_owed_at_once(marker: str, sent: list, settings) -> None:
    # given work owed for less than the grace period, and a broker that lost its data (no marker)
    settings.HUB_SWEEP_GRACE_SECONDS = 120
    owed = _owed(settings)
    # when the sweeper runs
    count = services.hub_sweep()
    # then everything owed is sent at once, without waiting for the grace period
    by_name: dict[str, list] = {}
    for name, kwargs, countdown in sent:
        by_name.setdefault(name, []).append((kwargs, countdown))
    unspread = Notification.objects.filter(spread_at__isnull=True).values_list("id", flat=True)
    assert owed["notification"].pk in unspread
    assert sorted(kwargs["notification_id"] for kwargs, _ in by_name["hub.spread"]) == sorted(unspread)
    assert by_name["hub.verify"] == [({"request_id": owed["request"].pk}, None)]
    deliveries = {kwargs["delivery_id"]: countdown for kwargs, countdown in by_name["hub.deliver"]}
    assert set(deliveries) == {owed["due"].pk, owed["retry_soon"].pk}
    assert deliveries[owed["due"].pk] is None
    # a retry not yet due keeps its time
    assert 0 < deliveries[owed["retry_soon"].pk] <= settings.HUB_SWEEP_GRACE_SECONDS / 2
    assert count == len(unspread) + 1 + 2
    # and the marker is back: the next sweeps send nothing more
    assert services.broker_marker_read() == sweeping.BROKER_MARKER_OK
    sent.clear()
    assert services.hub_sweep() == 0 and sent == []


def test_sweep_while_another_sweep_recovers_the_broker_does_nothing(marker: str, sent: list, settings) -> None:
    settings.HUB_SWEEP_GRACE_SECONDS = 0
    _set_marker(marker, sweeping.BROKER_MARKER_RECOVERING)
    _owed(settings)
    assert services.hub_sweep() == 0 and sent == []


def test_recovery_cut_short_by_a_second_loss_leaves_the_marker_gone_for_the_next_sweep(
    marker: str, sent: list, monkeypatch: pytest.MonkeyPatch, settings
) -> None:
    # given a broker that loses its data again while a recovery sends
    DeliveryFactory()
    real_enqueue = queueing.deliveries_enqueue

    def enqueue_then_lose_the_broker(*args: object, **kwargs: object) -> None:
        real_enqueue(*args, **kwargs)
        with sweeping._broker_redis() as client:
            client.delete(marker)

    monkeypatch.setattr(queueing, "deliveries_enqueue", enqueue_then_lose_the_broker)
    services.hub_sweep()
    # then the marker stays gone, so the next sweep recovers again
    assert services.broker_marker_read() is None


def test_sweep_resends_an_overdue_delivery_only_once_the_queues_stayed_short_for_a_grace_period(
    marker: str, sent: list, monkeypatch: pytest.MonkeyPatch, settings
) -> None:
    # given a healthy broker and a delivery overdue by more than the grace period
    settings.HUB_SWEEP_GRACE_SECONDS = 60
    settings.HUB_SWEEP_MAX_QUEUE = 10
    _set_marker(marker, sweeping.BROKER_MARKER_OK)
    overdue = DeliveryFactory(due_at=timezone.now() - timedelta(seconds=120))
    depth = {"n": 11}
    monkeypatch.setattr(sweeping, "queue_depth", lambda queue: depth["n"])
    # when a sweep sees a long delivery queue, and the next sees it short again
    assert services.hub_sweep() == 0
    depth["n"] = 0
    # then the delivery is not re-sent: the tail of the backlog may still hold it
    assert services.hub_sweep() == 0 and sent == []
    # until the queues have stayed short for the grace period
    with sweeping._broker_redis() as client:
        assert 0 < client.ttl(sweeping.BROKER_BACKLOG_KEY) <= 60
        client.delete(sweeping.BROKER_BACKLOG_KEY)
    assert services.hub_sweep() == 1
    assert sent == [("hub.deliver", {"delivery_id": overdue.pk}, None)]
