"""The three on-call questions, walked in a real browser on deliveries a real worker made.

A healthy subscriber, one that always answers 500 (so the hub pauses it) and a
picky one that refuses one message with 422: the operator logs in and finds,
each on the page the previous one links to,

1. which subscribers are failing right now (the dashboard, then the list of subscriptions with dead letters);
2. what failed for the picky one, and why (its dead letters: status code, error, times with seconds; the attempt log);
3. what a replay would do (a 422 will likely fail again; a paused subscription's deliveries wait for the resume).

The screenshots (dashboard, lists, replay) are kept in HUB_ADMIN_SCREENSHOT_DIR when it is set (README's
Admin section shows them: docs/img/).
"""

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from subscriptions.models import Delivery, Subscription
from tests.support.auth import api_client
from tests.support.browser import BROWSER_TIMEOUT_MS, CHROMIUM, CHROMIUM_ARGS, sync_playwright_or_skip
from tests.support.factories import SubscriptionFactory
from tests.support.subscriber import Answer, Received, Subscriber, wait_until

pytestmark = pytest.mark.e2e

PASSWORD = "on-call-browser-test-password-5d1e"
TOPIC = "UN.CEFACT.TRADE.CO"
MESSAGES = 6
REFUSED = 3  # the message the picky subscriber refuses
WIDTH = 1400
SCREENSHOTS = ["dashboard", "subscriptions", "deliveries", "notifications", "replay"]
ERROR_PAGE = (
    b"<html>\r\n<head><title>500 Internal Server Error</title></head>\r\n<body>\r\n"
    b"<center><h1>500 Internal Server Error</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>"
)


def _picky(item: Received) -> Answer:
    if f'"n":{REFUSED},'.encode() in item.body:
        return Answer(status=422, body=b'{"error":"unknown document type CO-X"}')
    return Answer(status=204)


@dataclass
class Seen:
    pages: dict[str, str] = field(default_factory=dict)  # the text of each page, by name
    urls: dict[str, str] = field(default_factory=dict)
    widths: dict[str, int] = field(default_factory=dict)  # each list's scroll width, in px


def _browse(base: str, ids: dict[str, int], shots: Path) -> Seen:
    """Everything the browser does, with no ORM call inside (Playwright runs an event loop in this thread)."""
    seen = Seen()
    with sync_playwright_or_skip()() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": 900})
            page.set_default_timeout(BROWSER_TIMEOUT_MS)

            def keep(name: str, *, shot: bool = False) -> None:
                seen.pages[name] = page.locator("#content").inner_text()
                seen.urls[name] = page.url
                # The widest of the page and of a list's table box (which scrolls sideways rather than the page).
                seen.widths[name] = page.evaluate(
                    "Math.max(document.documentElement.scrollWidth,"
                    f" ...[...document.querySelectorAll('.results')].map(e => e.scrollWidth - e.clientWidth + {WIDTH}))"
                )
                if shot:
                    page.screenshot(path=str(shots / f"admin-{name}.png"), full_page=True)

            page.goto(f"{base}/admin/login/?next=/admin/")
            page.fill("#id_username", "oncall")
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_url(f"{base}/admin/")
            # 1. Which subscribers are failing right now? The front page says, and the list agrees.
            keep("dashboard", shot=True)
            seen.pages["attention"] = page.locator("#attention").inner_text()
            page.goto(f"{base}/admin/subscriptions/subscription/")
            keep("subscriptions", shot=True)
            page.click("#changelist-filter a:has-text('Has failed deliveries')")
            page.wait_for_selector("p.hub-scope")
            keep("dead_letter_subscriptions")
            # 2. What failed for the picky one, and why? Its dead letters from the dashboard's link, then one of them.
            page.goto(f"{base}/admin/")
            page.locator(f"tr.attention-{ids['picky']} a:has-text('dead letters')").click()
            page.wait_for_selector("#result_list")
            keep("picky_dead_letters")
            page.locator("#result_list tbody tr").first.locator("th a, td a").first.click()
            page.wait_for_selector("#retry-delivery")
            keep("picky_delivery")
            # 3. Replay it? The hub warns first that a 422 will likely fail again.
            page.click("#retry-delivery")
            page.wait_for_selector("#replay-refused")
            keep("replay", shot=True)
            # ... and that a paused subscription's deliveries would wait for the resume.
            page.goto(f"{base}/admin/subscriptions/subscription/{ids['down']}/change/")
            page.click("button[value=retry_failed]")
            page.wait_for_selector("#replay-held")
            keep("replay_paused")
            # The other lists, as an operator sees them.
            page.goto(f"{base}/admin/subscriptions/delivery/")
            keep("deliveries", shot=True)
            page.goto(f"{base}/admin/subscriptions/notification/")
            keep("notifications", shot=True)
        finally:
            browser.close()
    return seen


def test_on_call_questions_are_answered_on_the_pages_they_land_on(
    hub, live_server, subscriber: Subscriber, tmp_path
) -> None:
    sync_playwright_or_skip()
    get_user_model().objects.create_superuser("oncall", "oncall@example.org", PASSWORD)
    # given three subscribers of one topic: healthy, always 500 (paused by the hub), refusing one message (422)
    subscriber.post_statuses["/down"] = [Answer(status=500, body=ERROR_PAGE)] * 1000
    subscriber.post_rule["/picky"] = _picky
    subs = {
        name: SubscriptionFactory(topic="UN.CEFACT", topic_key="un.cefact", callback=subscriber.url(f"/{name}"))
        for name in ("healthy", "down", "picky")
    }
    publisher = api_client()
    for n in range(MESSAGES):
        response = publisher.post(
            "/api/notifications/", {"topic": TOPIC, "content": {"n": n, "doc": "CO"}}, content_type="application/json"
        )
        assert response.status_code == 202
    ids = {name: s.pk for name, s in subs.items()}

    def settled() -> bool:
        def count(name: str, status: str) -> int:
            return Delivery.objects.filter(subscription_id=ids[name], status=status).count()

        return (
            count("healthy", Delivery.Status.DELIVERED) == MESSAGES
            and count("picky", Delivery.Status.DELIVERED) == MESSAGES - 1
            and count("picky", Delivery.Status.FAILED) == 1
            and count("down", Delivery.Status.FAILED) >= 1
            and Subscription.objects.get(pk=ids["down"]).state == Subscription.State.PAUSED
        )

    wait_until(settled, timeout=120, interval=0.5, what="healthy delivered, picky with a dead letter, down paused")
    refused = Delivery.objects.get(subscription_id=ids["picky"], status=Delivery.Status.FAILED)
    assert refused.last_status_code == 422 and refused.attempts >= 2

    # when the on-call operator browses
    seen = _browse(live_server.url, ids, tmp_path)
    if keep := os.environ.get("HUB_ADMIN_SCREENSHOT_DIR"):
        for name in SCREENSHOTS:
            shutil.copy(tmp_path / f"admin-{name}.png", Path(keep) / f"admin-{name}.png")

    callbacks = {name: subscriber.url(f"/{name}") for name in subs}
    # 1. the dashboard names the paused and the picky subscriber, not the healthy one
    attention = seen.pages["attention"]
    assert callbacks["down"] in attention and "Paused" in attention and "resume or retry" in attention
    assert callbacks["picky"] in attention and "1 dead letters" in attention
    assert callbacks["healthy"] not in attention
    assert "HTTP 500: 500 Internal Server Error" in attention  # the last error, on one line
    for outcome in ("delivered", "retrying", "failed"):
        assert outcome in seen.pages["dashboard"]
    dead = seen.pages["dead_letter_subscriptions"]
    assert callbacks["picky"] in dead and callbacks["down"] in dead and callbacks["healthy"] not in dead
    assert "This list is filtered" in dead and "Show all subscriptions" in dead
    # 2. the picky one's dead letter says 422, when (to the second) and why; its page has the whole attempt log
    letters = seen.pages["picky_dead_letters"]
    assert f"subscription: {ids['picky']}" in letters and "Failed" in letters and "422" in letters
    assert "HTTP 422" in letters and "1 delivery" in letters
    detail = seen.pages["picky_delivery"]
    assert 'HTTP 422: {"error":"unknown document type CO-X"}' in detail  # the full error
    assert detail.count("422") >= refused.attempts  # one per attempt in the log
    stamps = [a.started_at for a in refused.attempt_log.all()]
    for at in stamps:
        assert at.strftime("%Y-%m-%d %H:%M:%S") in detail  # times with seconds: the backoff shows
    # 3. the replay warns before sending what the subscriber refused, and tells that a paused one's wait
    assert "will likely fail again" in seen.pages["replay"] and "HTTP 422" in seen.pages["replay"]
    assert "belong to paused subscriptions" in seen.pages["replay_paused"]
    assert "Resume those subscriptions first" in seen.pages["replay_paused"]
    assert Delivery.objects.get(pk=refused.pk).status == Delivery.Status.FAILED  # nothing was sent
    # and every page fits 1,400 px without scrolling sideways
    for name in ("dashboard", "subscriptions", "deliveries", "notifications", "picky_dead_letters"):
        assert seen.widths[name] <= WIDTH, (name, seen.widths[name])
