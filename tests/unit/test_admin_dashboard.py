"""The admin's front page answers "is the hub healthy, and who needs attention?", with bounded queries that
stay bounded (and use indexes) at 1,000,000 deliveries."""

import json
import time
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from subscriptions.admin import dashboard
from subscriptions.models import Delivery, Subscription
from tests.support.factories import DeliveryFactory, NotificationFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db

# Queries of the dashboard page: session, user, chart, pending depths, attention (4); the app list needs none
# for a superuser.
MAX_DASHBOARD_QUERIES = 9
BIG_DELIVERIES = 1_000_000
# Seconds the dashboard may take at a million deliveries on a loaded 2-core test machine (it takes ~0.1 s).
BIG_PAGE_SECONDS = 5.0


def _recent(minutes: float = 5) -> object:
    return timezone.now() - timedelta(minutes=minutes)


@pytest.fixture
def hub_state() -> dict[str, Subscription]:
    """A healthy, a failing-then-paused, a sometimes-failing and a slightly failing subscriber."""
    healthy = SubscriptionFactory(callback="https://healthy.example/cb")
    paused = SubscriptionFactory(
        callback="https://always-500.example/cb",
        state=Subscription.State.PAUSED,
        paused_at=_recent(2),
        pause_reason="5 consecutive failed delivery attempts; last: HTTP 500",
        last_failure_at=_recent(2),
        last_failure_reason="HTTP 500: <html><body><h1>Internal Server Error</h1></body></html>",
    )
    picky = SubscriptionFactory(
        callback="https://picky.example/cb", last_failure_at=_recent(1), last_failure_reason="HTTP 422: unknown order"
    )
    slightly = SubscriptionFactory(callback="https://mostly-fine.example/cb")
    for _ in range(5):
        DeliveryFactory(subscription=healthy, status=Delivery.Status.DELIVERED, last_attempt_at=_recent())
    for _ in range(3):
        DeliveryFactory(subscription=paused, status=Delivery.Status.PENDING, attempts=1, last_attempt_at=_recent())
    DeliveryFactory(subscription=paused, status=Delivery.Status.FAILED, attempts=6, last_attempt_at=_recent(3))
    for _ in range(4):
        DeliveryFactory(subscription=picky, status=Delivery.Status.DELIVERED, last_attempt_at=_recent())
    for _ in range(2):
        DeliveryFactory(
            subscription=picky, status=Delivery.Status.FAILED, last_status_code=422, last_attempt_at=_recent()
        )
    # 1 retrying in 20 (5%): under the 10% threshold, and no dead letter.
    for _ in range(19):
        DeliveryFactory(subscription=slightly, status=Delivery.Status.DELIVERED, last_attempt_at=_recent())
    DeliveryFactory(subscription=slightly, status=Delivery.Status.PENDING, attempts=1, last_attempt_at=_recent())
    # Old news: a dead letter of the healthy one from two days ago is not "now".
    DeliveryFactory(subscription=healthy, status=Delivery.Status.FAILED, last_attempt_at=_recent(60 * 48))
    return {"healthy": healthy, "paused": paused, "picky": picky, "slightly": slightly}


def test_dashboard_is_the_admin_index_and_names_who_needs_attention(admin_client, hub_state) -> None:
    page = admin_client.get("/admin/").content.decode()

    assert 'id="hub-dashboard"' in page
    attention = page[page.index('id="attention"') : page.index('id="deliveries-chart"')]
    for name in ("paused", "picky"):
        assert f'class="attention-{hub_state[name].pk}"' in attention, name
    for name in ("healthy", "slightly"):
        assert f'class="attention-{hub_state[name].pk}"' not in attention, name
    # paused first, with its last error on one line, and links to act
    assert attention.index(f"attention-{hub_state['paused'].pk}") < attention.index(
        f"attention-{hub_state['picky'].pk}"
    )
    assert "HTTP 500: Internal Server Error" in attention and "<h1>" not in attention
    assert f"/admin/subscriptions/subscription/{hub_state['paused'].pk}/change/" in attention
    assert "resume or retry" in attention
    assert f"subscription__id__exact={hub_state['picky'].pk}&amp;status__exact=failed" in attention
    assert "2 of 6 failing, 2 dead letters" in attention
    # the Django list of models is still there
    assert "/admin/subscriptions/delivery/" in page[page.index('id="hub-models"') :]


def test_dashboard_threshold_comes_from_the_setting(admin_client, hub_state, settings) -> None:
    settings.HUB_ADMIN_ATTENTION_FAILURE_RATE = 4.0

    page = admin_client.get("/admin/").content.decode()

    assert f'class="attention-{hub_state["slightly"].pk}"' in page
    assert "more than 4% of their deliveries failing" in page


def test_dashboard_chart_totals_and_queue_depths(admin_client, hub_state) -> None:
    page = admin_client.get("/admin/").content.decode()

    assert '<svg class="hub-chart"' in page and "cdn" not in page.lower()
    delivered = 5 + 4 + 19
    assert f'<strong id="total-delivered">{delivered}</strong>' in page
    assert '<strong id="total-retrying">4</strong>' in page
    assert '<strong id="total-failed">3</strong>' in page  # the two-day-old dead letter is outside the 24 hours
    assert page.count('class="bar-delivered"') >= 1 and page.count('class="bar-failed"') >= 1
    # Pending: 4 attempted and due (factories default to due now); 3 of them held by the paused subscription.
    assert '<td id="pending-due">4</td>' in page and '<td id="pending-held">3</td>' in page
    assert "hub.deliver" in page or "The broker cannot be reached" in page


def test_chart_draws_each_minute_stacked_and_says_what_it_holds() -> None:
    start = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=dashboard.CHART_MINUTES - 1)
    rows = [
        dashboard.selectors.MinuteCount(start + timedelta(minutes=10), "delivered", 6),
        dashboard.selectors.MinuteCount(start + timedelta(minutes=10), "failed", 2),
        dashboard.selectors.MinuteCount(start + timedelta(minutes=11), "retrying", 4),
    ]

    svg = str(dashboard.chart_svg(rows, start=start))

    assert svg.count("<rect") == 3 and svg.count("<g>") == 2
    at = timezone.localtime(start + timedelta(minutes=10)).strftime("%H:%M")
    assert f"<title>{at}: 6 delivered, 2 failed</title>" in svg
    # the peak minute fills the height: 6 + 2 = 8 deliveries
    assert 'x="10" y="40.00" width="1" height="120.00"' in svg and 'y="0.00" width="1" height="40.00"' in svg
    assert "peak 8 a minute" in svg


def test_dashboard_is_not_shown_to_staff_who_may_not_view_deliveries(hub_state) -> None:
    user = get_user_model().objects.create_user("clerk", password="x", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_subscription"))
    client = Client()
    client.force_login(user)

    page = client.get("/admin/").content.decode()

    assert 'id="hub-dashboard"' not in page and hub_state["paused"].callback not in page


def _dashboard_queries(client: Client) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/admin/")
    assert response.status_code == 200
    return [q["sql"] for q in queries]


def _seq_scans(plan: dict, table: str) -> list[str]:
    found = []
    if plan.get("Node Type") == "Seq Scan" and plan.get("Relation Name") == table:
        found.append(f"Seq Scan on {table} (rows {plan.get('Plan Rows')})")
    for child in plan.get("Plans", []):
        found += _seq_scans(child, table)
    return found


def _populate_big(subscriptions: int = 1000) -> None:
    """A million deliveries over 30 days (about 33,000 in the last 24 hours), in one INSERT ... SELECT."""
    now = timezone.now()
    subs = Subscription.objects.bulk_create(
        SubscriptionFactory.build(callback=f"https://big{n}.example/cb", topic=f"https://big.example/{n}")
        for n in range(subscriptions)
    )
    Subscription.objects.filter(pk__in=[s.pk for s in subs[:20]]).update(state=Subscription.State.PAUSED, paused_at=now)
    first_subscription = subs[0].pk
    notifications = [NotificationFactory() for _ in range(BIG_DELIVERIES // subscriptions)]
    first_notification = notifications[0].pk
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO subscriptions_delivery
                (created_at, updated_at, uuid, notification_id, subscription_id, callback, status, attempts,
                 last_status_code, last_error, last_attempt_at, delivered_at, due_at)
            SELECT t, t, gen_random_uuid(), %(n0)s + i / %(subs)s, %(s0)s + i %% %(subs)s, 'https://big.example/cb',
                   CASE WHEN i %% 100 < 90 THEN 'delivered' WHEN i %% 100 < 93 THEN 'failed'
                        WHEN i %% 100 < 95 THEN 'pending' ELSE 'cancelled' END,
                   CASE WHEN i %% 100 = 93 THEN 0 ELSE 1 END,
                   CASE WHEN i %% 100 < 90 THEN 204 WHEN i %% 100 < 95 THEN 503 END, '',
                   CASE WHEN i %% 100 = 93 THEN NULL ELSE t END,
                   CASE WHEN i %% 100 < 90 THEN t END,
                   t + interval '1 minute'
            FROM (SELECT i, %(now)s::timestamptz - (%(total)s - i) * interval '2.592 seconds' AS t
                  FROM generate_series(0, %(total)s - 1) AS i) AS series
            """,
            {
                "n0": first_notification,
                "s0": first_subscription,
                "subs": subscriptions,
                "total": BIG_DELIVERIES,
                "now": now,
            },
        )
        cursor.execute("ANALYZE subscriptions_delivery")
        cursor.execute("ANALYZE subscriptions_subscription")


def test_dashboard_queries_stay_bounded_and_indexed_at_a_million_deliveries(admin_client, hub_state) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the plans checked are PostgreSQL's")
    small = _dashboard_queries(admin_client)
    assert len(small) <= MAX_DASHBOARD_QUERIES

    # given a million deliveries
    _populate_big()
    assert Delivery.objects.count() > BIG_DELIVERIES

    # when the dashboard renders
    started = time.monotonic()
    big = _dashboard_queries(admin_client)
    elapsed = time.monotonic() - started

    # then it makes the same queries, none reads the whole deliveries table, and it stays fast
    assert len(big) == len(small)
    plans = {}
    with connection.cursor() as cursor:
        for sql in big:
            if "subscriptions_delivery" not in sql or not sql.lstrip().upper().startswith("SELECT"):
                continue
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}")
            plan = cursor.fetchone()[0]
            plans[sql] = json.loads(plan)[0]["Plan"] if isinstance(plan, str) else plan[0]["Plan"]
    assert len(plans) >= 3  # the chart, the pending depths, the attention figures
    for sql, plan in plans.items():
        assert _seq_scans(plan, "subscriptions_delivery") == [], sql
    assert elapsed < BIG_PAGE_SECONDS, elapsed
    print(f"dashboard at {BIG_DELIVERIES} deliveries: {elapsed:.3f}s, {len(big)} queries")
