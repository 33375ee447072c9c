"""The admin answers "did my subscriber get it?" without slowing down as the tables grow, and never shows a secret."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from subscriptions import admin as hub_admin
from subscriptions import services
from subscriptions.models import Delivery, DeliveryAttempt, Notification, Subscription, SubscriptionRequest
from tests.support.factories import DEFAULT_LEASE_SECONDS

SECRET = "admin-must-never-show-this-secret-3f9c"
SUBSCRIPTIONS = 300
# Notifications that reach every subscription, then small ones to the first
# subscription only, for 1,000 deliveries in all.
FAN_OUT_NOTIFICATIONS = 3
DELIVERIES = 1000
STATUSES = [Delivery.Status.DELIVERED, Delivery.Status.FAILED, Delivery.Status.PENDING, Delivery.Status.CANCELLED]

# The most queries any admin page may make, whatever the row counts: session,
# user, the page's own reads (object, figures, a bounded table), and the
# paginator's one count on a list.
MAX_LIST_QUERIES = 6
MAX_CHANGE_QUERIES = 8


def _populate(prefix: str, subscriptions: int = SUBSCRIPTIONS, deliveries: int = DELIVERIES) -> dict[str, int]:
    """Bulk-create subscriptions, notifications, deliveries and attempts; return a few ids to open."""
    now = timezone.now()
    subs = Subscription.objects.bulk_create(
        Subscription(
            topic=f"https://{prefix}.example/feed/{n}",
            topic_key=f"https://{prefix}.example/feed/{n}",
            callback=f"https://{prefix}-subscriber.example/cb/{n}",
            secret=SECRET,
            lease_seconds=DEFAULT_LEASE_SECONDS,
            verified_at=now,
            expires_at=now + timedelta(seconds=DEFAULT_LEASE_SECONDS) if n % 10 else now - timedelta(hours=1),
            state=Subscription.State.PAUSED if n % 7 == 0 else Subscription.State.ACTIVE,
            pause_reason="6 consecutive failed delivery attempts; last: 503" if n % 7 == 0 else "",
            last_failure_at=now if n % 7 == 0 else None,
            last_failure_reason="503 Service Unavailable" if n % 7 == 0 else "",
        )
        for n in range(subscriptions)
    )
    fan_out = FAN_OUT_NOTIFICATIONS * len(subs)
    notifications = Notification.objects.bulk_create(
        Notification(
            topic=f"https://{prefix}.example/feed/n{n}", content=b'{"n":%d}' % n, content_type="application/json"
        )
        for n in range(FAN_OUT_NOTIFICATIONS + max(deliveries - fan_out, 0))
    )
    pairs = [(notification, sub) for notification in notifications[:FAN_OUT_NOTIFICATIONS] for sub in subs]
    pairs += [(notification, subs[0]) for notification in notifications[FAN_OUT_NOTIFICATIONS:]]
    rows = []
    for n, (notification, sub) in enumerate(pairs[:deliveries]):
        status = STATUSES[n % len(STATUSES)]
        rows.append(
            Delivery(
                notification=notification,
                subscription=sub,
                callback=sub.callback,
                status=status,
                attempts=0 if status == Delivery.Status.PENDING else 1 + n % 4,
                last_status_code={Delivery.Status.DELIVERED: 204, Delivery.Status.FAILED: 503}.get(status),
                last_error="503 Service Unavailable" if status == Delivery.Status.FAILED else "",
                last_attempt_at=None if status == Delivery.Status.PENDING else now,
                delivered_at=now if status == Delivery.Status.DELIVERED else None,
            )
        )
    created = Delivery.objects.bulk_create(rows)
    DeliveryAttempt.objects.bulk_create(
        DeliveryAttempt(delivery=d, number=1, started_at=now, duration_ms=12, status_code=d.last_status_code)
        for d in created[:200]
        if d.attempts
    )
    request = SubscriptionRequest.objects.create(
        mode="subscribe", topic="a.b", topic_key="a.b", callback=f"https://{prefix}.example/", secret=SECRET
    )
    return {
        "subscription": subs[0].pk,
        "notification": notifications[0].pk,
        "delivery": created[1].pk,
        "request": request.pk,
    }


def _pages(ids: dict[str, int]) -> list[str]:
    base = "/admin/subscriptions"
    return [
        f"{base}/subscription/",
        f"{base}/subscription/?state__exact=paused",
        f"{base}/subscription/?lease=expired",
        f"{base}/subscription/?q=subscriber.example",
        f"{base}/subscriptionrequest/",
        f"{base}/subscriptionrequest/?state__exact=pending",
        f"{base}/notification/",
        f"{base}/delivery/",
        f"{base}/delivery/?status__exact=failed",
        f"{base}/delivery/?subscription__id__exact={ids['subscription']}",
        f"{base}/delivery/?notification__id__exact={ids['notification']}&status__exact=delivered",
        # The filters that answer on-call questions (tests/unit/test_admin_lists.py).
        f"{base}/subscription/?dead_letters=yes&topic_prefix=https://big",
        f"{base}/delivery/?status__exact=held",
        f"{base}/delivery/?status_code=5xx&attempted=24h&topic_prefix=https://big",
        f"{base}/notification/?outcome=failed&published=24h",
        f"{base}/subscription/{ids['subscription']}/change/",
        f"{base}/notification/{ids['notification']}/change/",
        f"{base}/delivery/{ids['delivery']}/change/",
        f"{base}/subscriptionrequest/{ids['request']}/change/",
    ]


def _query_count(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(queries)


@pytest.fixture
def populated(db) -> dict[str, int]:
    return _populate("big")


def test_every_admin_page_makes_a_bounded_number_of_queries_and_shows_no_secret(
    admin_client, populated, django_assert_max_num_queries
) -> None:
    for url in _pages(populated):
        limit = MAX_CHANGE_QUERIES if url.endswith("/change/") else MAX_LIST_QUERIES
        with django_assert_max_num_queries(limit):
            response = admin_client.get(url)
        assert response.status_code == 200, url
        assert SECRET.encode() not in response.content, url


def test_admin_query_counts_do_not_grow_with_the_tables(admin_client, populated) -> None:
    # given the counts at 300 subscriptions and 1,000 deliveries
    pages = _pages(populated)
    before = {url: _query_count(admin_client, url) for url in pages}

    # when the tables double
    _populate("more")

    # then every page makes the same number of queries
    assert {url: _query_count(admin_client, url) for url in pages} == before


def test_subscription_page_answers_state_lease_secret_figures_and_recent_deliveries(admin_client, populated) -> None:
    pk = populated["subscription"]
    subscription = Subscription.objects.get(pk=pk)

    page = admin_client.get(f"/admin/subscriptions/subscription/{pk}/change/").content.decode()

    assert "Paused" in page and "6 consecutive failed delivery attempts" in page
    assert "expired" in page and "awaiting removal" in page  # the first subscription's lease has ended
    assert 'alt="True"' in page  # secret set, shown as a boolean icon only
    assert SECRET not in page
    figures = Delivery.objects.filter(subscription_id=pk)
    delivered = figures.filter(status=Delivery.Status.DELIVERED).count()
    failed = figures.filter(status=Delivery.Status.FAILED).count()
    assert f"{delivered} delivered" in page and f"{failed} failed" in page
    assert "503 Service Unavailable" in page  # last failure
    newest = figures.order_by("-id")[: hub_admin.RECENT_DELIVERIES]
    assert page.count('class="delivery-') == hub_admin.RECENT_DELIVERIES
    for delivery in newest:
        assert f"/admin/subscriptions/delivery/{delivery.pk}/change/" in page
    assert f"/admin/subscriptions/delivery/?subscription__id__exact={pk}" in page
    assert 'name="rate_limit"' in page  # still editable
    assert subscription.state == Subscription.State.PAUSED and "Resume" in page


def test_notification_page_lists_its_deliveries_per_subscriber_up_to_a_limit(admin_client, populated) -> None:
    pk = populated["notification"]

    page = admin_client.get(f"/admin/subscriptions/notification/{pk}/change/").content.decode()

    assert page.count('class="delivery-') == hub_admin.NOTIFICATION_DELIVERIES
    assert f"Only the first {hub_admin.NOTIFICATION_DELIVERIES} are shown" in page
    assert f"/admin/subscriptions/delivery/?notification__id__exact={pk}" in page
    first = Delivery.objects.filter(notification_id=pk).order_by("id").first()
    assert first.callback in page and f"/admin/subscriptions/subscription/{first.subscription_id}/change/" in page
    assert f"{SUBSCRIPTIONS // 4} Failed" in page


def test_delivery_list_finds_a_delivery_by_its_x_hub_delivery_uuid(admin_client, populated) -> None:
    delivery = Delivery.objects.get(pk=populated["delivery"])

    page = admin_client.get(f"/admin/subscriptions/delivery/?q={delivery.uuid}").content.decode()

    assert f"/admin/subscriptions/delivery/{delivery.pk}/change/" in page
    assert "1 delivery" in page


def _act(client: Client, pk: int, action: str, data: dict | None = None) -> None:
    response = client.post(f"/admin/subscriptions/subscription/{pk}/act/{action}/", data or {})
    assert response.status_code == 302
    assert response["Location"] == f"/admin/subscriptions/subscription/{pk}/change/"


def test_change_page_buttons_pause_resume_and_retry(admin_client, populated, django_capture_on_commit_callbacks):
    pk = populated["subscription"]

    _act(admin_client, pk, "resume")
    assert Subscription.objects.get(pk=pk).state == Subscription.State.ACTIVE
    _act(admin_client, pk, "pause")
    paused = Subscription.objects.get(pk=pk)
    assert paused.state == Subscription.State.PAUSED and paused.pause_reason == "paused by an operator"

    failed = Delivery.objects.filter(subscription_id=pk, status=Delivery.Status.FAILED)
    count = failed.count()
    # The replay enqueues after commit; this test only looks at the rows.
    with django_capture_on_commit_callbacks(execute=False):
        # Paused: the replay's confirmation step (its deliveries wait for the resume) is answered.
        _act(admin_client, pk, "retry_failed", {"replay_confirmed": "yes"})
    assert count and not failed.exists()


def test_expire_now_ends_the_lease_so_the_next_expiry_run_removes_it(admin_client, populated) -> None:
    pk = populated["subscription"] + 1  # a live subscription
    assert Subscription.objects.get(pk=pk).expires_at > timezone.now()

    _act(admin_client, pk, "expire_now")

    assert Subscription.objects.get(pk=pk).expires_at <= timezone.now()
    services.subscriptions_expire()
    assert not Subscription.objects.filter(pk=pk).exists()


def test_list_action_expires_the_selected_subscriptions(admin_client, populated) -> None:
    ids = list(Subscription.objects.filter(expires_at__gt=timezone.now()).values_list("pk", flat=True)[:3])

    response = admin_client.post(
        "/admin/subscriptions/subscription/", {"action": "expire_now", "_selected_action": ids}
    )

    assert response.status_code == 302
    assert not Subscription.objects.filter(pk__in=ids, expires_at__gt=timezone.now()).exists()


def test_change_page_actions_need_the_change_permission(db) -> None:
    subscription = Subscription.objects.create(
        topic="a.b",
        topic_key="a.b",
        callback="https://s.example/",
        lease_seconds=60,
        verified_at=timezone.now(),
        expires_at=timezone.now() + timedelta(minutes=1),
    )
    viewer = get_user_model().objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_subscription"))
    client = Client()
    client.force_login(viewer)

    assert client.get(f"/admin/subscriptions/subscription/{subscription.pk}/change/").status_code == 200
    response = client.post(f"/admin/subscriptions/subscription/{subscription.pk}/act/expire_now/")

    assert response.status_code == 403
    assert Subscription.objects.get(pk=subscription.pk).expires_at > timezone.now()


def test_change_page_actions_refuse_a_get(admin_client, populated) -> None:
    pk = populated["subscription"] + 1
    before = Subscription.objects.get(pk=pk).expires_at

    response = admin_client.get(f"/admin/subscriptions/subscription/{pk}/act/expire_now/")

    assert response.status_code == 403
    assert Subscription.objects.get(pk=pk).expires_at == before


def test_unfiltered_list_counts_from_postgresql_statistics_not_count(admin_client, populated, monkeypatch) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the estimate is PostgreSQL's pg_class.reltuples; other databases count exactly")
    # given statistics for the table, and a threshold every table passes
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE subscriptions_delivery")
    monkeypatch.setattr(hub_admin.base, "EXACT_COUNT_BELOW", 0)

    # when the unfiltered list renders
    with CaptureQueriesContext(connection) as queries:
        page = admin_client.get("/admin/subscriptions/delivery/").content.decode()

    # then no query counts the table, and the total says it is an estimate
    assert not [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
    assert "about</span>" in page
    paginator = hub_admin.EstimatedCountPaginator(Delivery.objects.all(), 100)
    assert paginator.count == pytest.approx(DELIVERIES, rel=0.2) and paginator.estimated


def test_filtered_and_small_lists_count_exactly(populated) -> None:
    filtered = hub_admin.EstimatedCountPaginator(Delivery.objects.filter(status=Delivery.Status.FAILED), 100)
    small = hub_admin.EstimatedCountPaginator(Delivery.objects.all(), 100)

    assert filtered.count == Delivery.objects.filter(status=Delivery.Status.FAILED).count()
    assert not filtered.estimated
    # Below EXACT_COUNT_BELOW rows (and on SQLite) the count is exact.
    assert small.count == DELIVERIES and not small.estimated
