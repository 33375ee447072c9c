"""Reads through selectors: the API, the admin and hub_retry_failed ask "which deliveries" of one function."""

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from subscriptions import selectors
from subscriptions.models import Delivery
from subscriptions.topics import subscription_key
from tests.support.factories import DeliveryFactory, SubscriptionFactory
from websubhub.celery import app as celery_app

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(celery_app, "send_task", lambda *args, **kwargs: None)


@pytest.fixture
def history() -> dict[str, object]:
    """Two subscriptions; the first has a recent and an old failure and a recent success, the second a failure."""
    now = timezone.now()
    first, second = SubscriptionFactory(), SubscriptionFactory()
    recent = DeliveryFactory(subscription=first, status=Delivery.Status.FAILED, last_attempt_at=now)
    old = DeliveryFactory(subscription=first, status=Delivery.Status.FAILED, last_attempt_at=now - timedelta(days=2))
    DeliveryFactory(subscription=first, status=Delivery.Status.DELIVERED, last_attempt_at=now)
    other = DeliveryFactory(subscription=second, status=Delivery.Status.FAILED, last_attempt_at=now)
    return {"first": first, "recent": recent, "old": old, "other": other, "since": now - timedelta(days=1)}


def test_failed_deliveries_of_a_subscription_since_a_time(history) -> None:
    failed = selectors.deliveries_failed(subscription_id=history["first"].pk, since=history["since"])

    assert set(failed) == {history["recent"]}
    assert set(selectors.deliveries_failed(subscription_id=history["first"].pk)) == {history["recent"], history["old"]}
    assert set(selectors.deliveries_failed(delivery_id=history["other"].pk)) == {history["other"]}


def test_the_api_and_the_command_select_the_same_failed_deliveries(history, client) -> None:
    # when the API lists a subscription's failed deliveries, and the command counts them
    listed = client.get("/api/deliveries/", {"subscription": history["first"].pk, "status": "failed"}).json()
    out = io.StringIO()
    call_command("hub_retry_failed", "--subscription", str(history["first"].pk), "--dry-run", stdout=out)

    # then both give the selector's answer
    expected = selectors.deliveries_failed(subscription_id=history["first"].pk)
    assert sorted(row["id"] for row in listed["results"]) == sorted(expected.values_list("id", flat=True))
    assert out.getvalue() == f"{expected.count()} failed deliveries would be sent again\n"


def test_the_command_counts_failures_since_a_time_as_the_selector_does(history) -> None:
    out = io.StringIO()
    since = history["since"].isoformat()
    call_command(
        "hub_retry_failed", "--subscription", str(history["first"].pk), "--since", since, "--dry-run", stdout=out
    )

    assert out.getvalue() == "1 failed deliveries would be sent again\n"


@pytest.mark.parametrize("since", ["yesterday", "2026-13-01T00:00:00"])
def test_the_command_refuses_a_time_it_cannot_read_with_a_message(since: str) -> None:
    # "2026-13-01" has the form of a time but no such month: it used to end in a traceback.
    with pytest.raises(CommandError, match=r"--since must be an ISO 8601 time such as 2026-11-28T10:00:00Z, not "):
        call_command("hub_retry_failed", "--since", since)


@pytest.mark.parametrize(
    ("query", "errors"),
    [
        ({"subscription": "x"}, {"subscription": ["must be a whole number (an id)"]}),
        ({"notification": "1.0"}, {"notification": ["must be a whole number (an id)"]}),
        ({"status": "lost"}, {"status": ["must be one of pending, delivered, failed, cancelled"]}),
        # one filter refused at a time, the first
        ({"status": "lost", "subscription": "x"}, {"subscription": ["must be a whole number (an id)"]}),
    ],
)
def test_the_delivery_list_refuses_a_bad_filter_naming_it(client, query: dict, errors: dict) -> None:
    response = client.get("/api/deliveries/", query)

    assert response.status_code == 400
    assert response.json()["errors"] == errors


def test_the_delivery_list_ignores_what_is_not_one_of_its_filters(history, client) -> None:
    response = client.get("/api/deliveries/", {"since": "junk", "delivery": "x"})

    assert response.status_code == 200
    assert response.json()["count"] == Delivery.objects.count()


def test_the_admins_subscription_retry_replays_the_selected_subscriptions_failures(history, admin_client) -> None:
    response = admin_client.post(
        "/admin/subscriptions/subscription/",
        {"action": "retry_failed", "_selected_action": [history["first"].pk]},
    )

    assert response.status_code == 302
    assert set(Delivery.objects.filter(status=Delivery.Status.PENDING)) == {history["recent"], history["old"]}


def test_subscriptions_by_topic_callback_and_lease_through_one_selector(client, admin_client) -> None:
    # given a live and an expired subscription on one topic, and one on another topic
    now = timezone.now()
    live = SubscriptionFactory(topic="orders.eu", callback="https://a.example/cb")
    expired = SubscriptionFactory(
        topic="orders.eu", callback="https://b.example/cb", expires_at=now - timedelta(hours=1)
    )
    SubscriptionFactory(topic="invoices", callback="https://a.example/other")

    # then the selector, the API, the command and the admin's lease filter agree
    keys = [subscription_key("orders.eu")]
    assert set(selectors.subscriptions_list(topic_keys=keys)) == {live, expired}
    assert set(selectors.subscriptions_list(topic_keys=keys, expired=True)) == {expired}
    assert set(selectors.subscriptions_list(topic_keys=keys, state=live.state)) == {live}
    listed = client.get("/api/subscriptions/", {"topic": "ORDERS.EU", "callback": "https://a.example/cb"}).json()
    assert [row["id"] for row in listed["results"]] == [live.pk]
    out = io.StringIO()
    call_command("hub_subscriptions", "--topic", "orders.eu", "--state", "expired", stdout=out)
    assert [line.split()[0] for line in out.getvalue().splitlines()[2:]] == [str(expired.pk)]
    page = admin_client.get("/admin/subscriptions/subscription/", {"lease": "expired"}).content.decode()
    assert "https://b.example/cb" in page and "https://a.example/cb" not in page
