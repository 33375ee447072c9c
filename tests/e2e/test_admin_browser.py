"""Smoke test in a real headless browser: log in to the admin, open a subscription, see its deliveries.

Debian's `chromium` (installed by .ci/run) driven by Playwright for Python
against pytest-django's live server. Playwright's own browser downloads are
not used. Skipped, saying why, only where that browser or playwright is missing.
"""

import os
import shutil
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.contrib.auth import get_user_model
from django.utils import timezone

from subscriptions.models import Delivery, Notification, Subscription
from tests.support.browser import BROWSER_TIMEOUT_MS, CHROMIUM, CHROMIUM_ARGS, sync_playwright_or_skip

PASSWORD = "browser-smoke-test-password-71c2"
SECRET = "browser-smoke-test-secret-never-shown"
DELIVERIES = 3


def _sync_playwright():  # -> playwright's context manager factory, or a skip
    return sync_playwright_or_skip()


@dataclass
class Seen:
    url_after_login: str
    heading: str
    rows: list[str]
    page_text: str
    delivery_page_text: str


def _browse(base_url: str, subscription_id: int, screenshot: Path) -> Seen:
    """Everything the browser does, with no ORM call inside.

    Playwright's sync API runs an event loop in this thread while it is open,
    and Django refuses database access from a thread with a running loop.
    """
    sync_playwright = _sync_playwright()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(BROWSER_TIMEOUT_MS)
            # Log in through the real form.
            page.goto(f"{base_url}/admin/login/?next=/admin/")
            page.fill("#id_username", "operator")
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_url(f"{base_url}/admin/")
            url_after_login = page.url
            # Open the subscription and read its recent deliveries.
            page.goto(f"{base_url}/admin/subscriptions/subscription/{subscription_id}/change/")
            page.wait_for_selector("table.hub-deliveries")
            rows = page.locator("table.hub-deliveries tbody tr").all_inner_texts()
            heading = page.locator("#content h1").first.inner_text()
            page_text = page.content()
            page.screenshot(path=str(screenshot), full_page=True)
            # Follow the first delivery to its own page.
            page.locator("table.hub-deliveries tbody tr").first.locator("a").first.click()
            page.wait_for_selector("#content h1")
            delivery_page_text = page.locator("#content").inner_text()
        finally:
            browser.close()
    return Seen(url_after_login, heading, rows, page_text, delivery_page_text)


def test_operator_logs_in_opens_a_subscription_and_sees_its_deliveries(live_server, transactional_db, tmp_path):
    # given an operator and a subscription with deliveries (committed: the live server has its own connection)
    _sync_playwright()
    get_user_model().objects.create_superuser("operator", "operator@example.org", PASSWORD)
    now = timezone.now()
    subscription = Subscription.objects.create(
        topic="https://publisher.example/feed",
        topic_key="https://publisher.example/feed",
        callback="https://subscriber.example/callback",
        secret=SECRET,
        lease_seconds=86_400,
        verified_at=now,
        expires_at=now + timedelta(days=1),
    )
    outcomes = [
        (Delivery.Status.DELIVERED, 204, ""),
        (Delivery.Status.FAILED, 503, "503 Service Unavailable"),
        (Delivery.Status.PENDING, None, ""),
    ]
    for n, (status, code, error) in enumerate(outcomes):
        notification = Notification.objects.create(
            topic=subscription.topic, content=b'{"n":%d}' % n, content_type="application/json"
        )
        Delivery.objects.create(
            notification=notification,
            subscription=subscription,
            callback=subscription.callback,
            status=status,
            attempts=0 if code is None else 1,
            last_status_code=code,
            last_error=error,
            last_attempt_at=None if code is None else now,
            delivered_at=now if status == Delivery.Status.DELIVERED else None,
        )
    screenshot = tmp_path / "subscription.png"

    # when the operator browses to it
    seen = _browse(live_server.url, subscription.pk, screenshot)

    # then the subscription's deliveries are listed, newest first, and the secret is not on the page
    assert seen.url_after_login == f"{live_server.url}/admin/"
    assert "Change subscription" in seen.heading
    assert len(seen.rows) == DELIVERIES
    assert "Pending" in seen.rows[0] and "Failed" in seen.rows[1] and "Delivered" in seen.rows[2]
    assert "503" in seen.rows[1] and "503 Service Unavailable" in seen.rows[1]
    assert SECRET not in seen.page_text
    assert "Change delivery" in seen.delivery_page_text or "View delivery" in seen.delivery_page_text
    assert screenshot.stat().st_size > 0
    # HUB_ADMIN_SCREENSHOT_DIR keeps the screenshot for a person to look at.
    if keep := os.environ.get("HUB_ADMIN_SCREENSHOT_DIR"):
        shutil.copy(screenshot, Path(keep) / screenshot.name)
