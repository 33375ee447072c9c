"""The admin lists answer on-call questions: who is failing (dead letters, success rate, last failure), what is
held, what failed with which status, and they say when they are filtered, with a way back to everything."""

import html
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from subscriptions.admin import display
from subscriptions.models import Delivery, DeliveryAttempt, Subscription
from tests.support.factories import DeliveryFactory, NotificationFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db

SUBSCRIPTIONS = "/admin/subscriptions/subscription/"
DELIVERIES = "/admin/subscriptions/delivery/"
NOTIFICATIONS = "/admin/subscriptions/notification/"
HTML_ERROR = (
    "HTTP 502: <html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n<h1>Bad Gateway</h1>\n</body></html>"
)


def _ago(minutes: float) -> object:
    return timezone.now() - timedelta(minutes=minutes)


def _page(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, url
    return response.content.decode()


def _row(page: str, pk: int, model: str = "subscription") -> str:
    """The list row of one object (from its link to the end of the row)."""
    start = page.index(f'href="/admin/subscriptions/{model}/{pk}/change/')
    return page[start : page.index("</tr>", start)]


@pytest.fixture
def picky() -> Subscription:
    """Mostly delivered, but three dead letters (422) after its last success: "consecutive failures" reads 0."""
    subscription = SubscriptionFactory(
        callback="https://picky.example/cb",
        topic="UN.CEFACT.TRADE",
        topic_key="un.cefact.trade",
        last_failure_at=_ago(10),
        last_failure_reason=HTML_ERROR,
    )
    for _ in range(3):
        DeliveryFactory(
            subscription=subscription, status=Delivery.Status.FAILED, last_status_code=422, last_attempt_at=_ago(10)
        )
    for _ in range(9):
        DeliveryFactory(subscription=subscription, status=Delivery.Status.DELIVERED, last_attempt_at=_ago(5))
    DeliveryFactory(subscription=subscription, status=Delivery.Status.DELIVERED, last_attempt_at=_ago(120))
    return subscription


@pytest.fixture
def healthy() -> Subscription:
    subscription = SubscriptionFactory(callback="https://healthy.example/cb", topic="https://feeds.example/a")
    DeliveryFactory(subscription=subscription, status=Delivery.Status.DELIVERED, last_attempt_at=_ago(1))
    return subscription


def test_subscription_list_shows_dead_letters_success_rate_and_last_failure(admin_client, picky, healthy) -> None:
    page = _page(admin_client, SUBSCRIPTIONS)

    row = _row(page, picky.pk)
    assert f"subscription__id__exact={picky.pk}&amp;status__exact=failed" in row and ">3</a>" in row
    assert "75% of 12" in row and "hub-rate-bad" in row  # 9 delivered of 12 attempted in the last hour
    assert timezone.localtime(picky.last_failure_at).strftime("%Y-%m-%d %H:%M:%S") in row
    assert "HTTP 502: 502 Bad Gateway" in row and "<h1>" not in row  # one line, tags stripped
    healthy_row = _row(page, healthy.pk)
    assert "100% of 1" in healthy_row and "hub-rate-good" in healthy_row


def test_subscription_list_filters_dead_letters_state_and_topic_prefix(admin_client, picky, healthy) -> None:
    paused = SubscriptionFactory(state=Subscription.State.PAUSED, topic="UN.OTHER", topic_key="un.other")

    with_dead = _page(admin_client, f"{SUBSCRIPTIONS}?dead_letters=yes")
    without = _page(admin_client, f"{SUBSCRIPTIONS}?dead_letters=no")
    prefix = _page(admin_client, f"{SUBSCRIPTIONS}?topic_prefix=un.cefact")
    url_prefix = _page(admin_client, f"{SUBSCRIPTIONS}?topic_prefix=https://feeds.example/")
    state = _page(admin_client, f"{SUBSCRIPTIONS}?state__exact=paused")

    def listed(page: str) -> set[int]:
        return {s.pk for s in (picky, healthy, paused) if f"/admin/subscriptions/subscription/{s.pk}/change/" in page}

    assert listed(with_dead) == {picky.pk}
    assert listed(without) == {healthy.pk, paused.pk}
    assert listed(prefix) == {picky.pk}
    assert listed(url_prefix) == {healthy.pk}
    assert listed(state) == {paused.pk}


def test_delivery_list_shows_held_for_a_paused_subscription_and_filters_it(admin_client) -> None:
    paused = SubscriptionFactory(state=Subscription.State.PAUSED)
    held = DeliveryFactory(subscription=paused, status=Delivery.Status.PENDING)
    in_flight = DeliveryFactory(status=Delivery.Status.PENDING)

    page = _page(admin_client, DELIVERIES)
    assert "Held (paused)" in _row(page, held.pk, "delivery")
    assert "Held" not in _row(page, in_flight.pk, "delivery") and "Pending" in _row(page, in_flight.pk, "delivery")

    held_only = _page(admin_client, f"{DELIVERIES}?status__exact=held")
    pending_only = _page(admin_client, f"{DELIVERIES}?status__exact=pending")
    assert f"/delivery/{held.pk}/change/" in held_only and f"/delivery/{in_flight.pk}/change/" not in held_only
    assert f"/delivery/{in_flight.pk}/change/" in pending_only and f"/delivery/{held.pk}/change/" not in pending_only
    # the subscription's own page says it too
    assert "Held (paused)" in _page(admin_client, f"{SUBSCRIPTIONS}{paused.pk}/change/")


def test_delivery_list_filters_status_code_time_topic_subscription(admin_client, picky) -> None:
    other = DeliveryFactory(
        status=Delivery.Status.FAILED,
        last_status_code=503,
        last_attempt_at=_ago(60 * 30),
        notification=NotificationFactory(topic="https://elsewhere.example/feed"),
    )
    refused = set(Delivery.objects.filter(subscription=picky, last_status_code=422).values_list("pk", flat=True))
    everything = set(Delivery.objects.values_list("pk", flat=True))

    def listed(query: str) -> set[int]:
        page = _page(admin_client, f"{DELIVERIES}?{query}")
        return {pk for pk in everything if f"/admin/subscriptions/delivery/{pk}/change/" in page}

    assert listed("status_code=422") == refused
    assert listed("status_code=4xx") == refused
    assert listed("status_code=5xx") == {other.pk}
    assert listed("attempted=24h") == everything - {other.pk}
    older = set(Delivery.objects.filter(last_attempt_at__lt=_ago(15)).values_list("pk", flat=True))
    assert older == {other.pk, picky.deliveries.get(last_attempt_at__lt=_ago(60)).pk}
    assert listed("attempted=15m") == everything - older
    assert listed("topic_prefix=https://elsewhere.example/") == {other.pk}
    assert listed(f"subscription__id__exact={picky.pk}") == everything - {other.pk}
    assert listed(f"notification__id__exact={other.notification_id}") == {other.pk}
    assert listed(f"subscription__id__exact={picky.pk}&status__exact=failed&status_code=422") == refused


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status_code=abc", "is not an HTTP status (100-599) or a class like 5xx"),
        ("status_code=999", "is not an HTTP status"),
        ("subscription__id__exact=x1", "subscription: 'x1' is not a number"),
        ("notification__id__exact=-4", "notification: '-4' is not a number"),
        ("status__exact=lost", "'lost' is not a delivery status"),
    ],
)
def test_unreadable_filter_values_say_why_and_select_nothing(admin_client, picky, query, message) -> None:
    response = admin_client.get(f"{DELIVERIES}?{query}")

    assert response.status_code == 200
    page = html.unescape(response.content.decode())
    assert message.lower() in page.lower()  # the admin capitalises a message's first letter
    assert "0 deliveries" in page


def test_a_list_scoped_through_the_url_says_so_and_can_be_cleared(admin_client, picky) -> None:
    page = _page(admin_client, f"{DELIVERIES}?subscription__id__exact={picky.pk}")

    assert "This list is filtered" in page and f"subscription: <strong>{picky.pk}</strong>" in page
    assert 'class="hub-clear-all"' in page and 'href="?"' in page
    assert f'value="{picky.pk}"' in page and "clear subscription" in page  # the sidebar's box holds the scope
    assert "This list is filtered" not in _page(admin_client, DELIVERIES)
    # a choice reads as the sidebar names it
    chosen = _page(admin_client, f"{SUBSCRIPTIONS}?state__exact=paused&dead_letters=yes&topic_prefix=UN")
    assert "state: <strong>Paused</strong> · dead letters: <strong>Has failed deliveries</strong>" in chosen
    assert "topic prefix: <strong>UN</strong>" in chosen


def test_delivery_list_columns_stay_on_one_line_with_the_full_error_on_the_delivery_page(admin_client) -> None:
    delivery = DeliveryFactory(status=Delivery.Status.FAILED, last_status_code=502, last_error=HTML_ERROR)

    row = _row(_page(admin_client, DELIVERIES), delivery.pk, "delivery")
    detail = _page(admin_client, f"{DELIVERIES}{delivery.pk}/change/")

    assert "\n" not in row.split("field-error_short", 1)[1].split("</td>", 1)[0]
    assert "<h1>" not in row and 'title="HTTP 502: 502 Bad Gateway Bad Gateway"' in row
    assert "&lt;h1&gt;Bad Gateway&lt;/h1&gt;" in detail  # the full text, escaped


def test_times_show_seconds_in_one_format_everywhere(admin_client) -> None:
    at = timezone.now().replace(microsecond=0) - timedelta(seconds=7)
    delivery = DeliveryFactory(status=Delivery.Status.FAILED, last_attempt_at=at, last_status_code=503)
    DeliveryAttempt.objects.create(delivery=delivery, number=1, started_at=at, duration_ms=3, status_code=503)
    stamp = timezone.localtime(at).strftime("%Y-%m-%d %H:%M:%S")

    assert stamp in _row(_page(admin_client, DELIVERIES), delivery.pk, "delivery")
    detail = _page(admin_client, f"{DELIVERIES}{delivery.pk}/change/")
    assert detail.count(stamp) >= 2  # the delivery's last attempt and the attempt log
    notification_list = _page(admin_client, NOTIFICATIONS)
    created = timezone.localtime(delivery.notification.created_at).strftime("%Y-%m-%d %H:%M:%S")
    assert created in notification_list
    assert "a.m." not in notification_list + detail and "p.m." not in notification_list + detail


def test_notification_list_summarises_outcomes_and_filters_them(admin_client) -> None:
    mixed = NotificationFactory(topic="UN.CEFACT.TRADE.CO", spread_at=timezone.now())
    fine = NotificationFactory(topic="UN.OTHER", spread_at=timezone.now())
    waiting = NotificationFactory(spread_at=None)
    for status in [Delivery.Status.DELIVERED, Delivery.Status.DELIVERED, Delivery.Status.FAILED]:
        DeliveryFactory(notification=mixed, status=status)
    DeliveryFactory(notification=fine, status=Delivery.Status.DELIVERED)

    page = _page(admin_client, NOTIFICATIONS)
    row = _row(page, mixed.pk, "notification")
    assert "1 failed" in row and "2 delivered" in row and row.index("1 failed") < row.index("2 delivered")
    assert f"notification__id__exact={mixed.pk}&amp;status__exact=failed" in row
    assert "not spread yet" in _row(page, waiting.pk, "notification")

    def listed(query: str) -> set[int]:
        found = _page(admin_client, f"{NOTIFICATIONS}?{query}")
        return {n.pk for n in (mixed, fine, waiting) if f"/admin/subscriptions/notification/{n.pk}/change/" in found}

    assert listed("outcome=failed") == {mixed.pk}
    assert listed("outcome=delivered") == {fine.pk}
    assert listed("outcome=unspread") == {waiting.pk}
    assert listed("topic_prefix=un.cefact") == {mixed.pk}
    assert listed("published=1h") == {mixed.pk, fine.pk, waiting.pk}


def test_one_line_strips_tags_and_collapses_whitespace() -> None:
    assert display.one_line(HTML_ERROR) == "HTTP 502: 502 Bad Gateway Bad Gateway"
    assert display.shortened("", 10) == "—"
    assert str(display.shortened("x" * 30, 10)).startswith('<span title="' + "x" * 30)
