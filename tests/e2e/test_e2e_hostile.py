"""Hostile peers end to end: a real worker (8 threads), real dripping servers and real subscribers on 127.0.0.1."""

import time
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from subscriptions import services
from subscriptions.models import Delivery, DeliveryAttempt
from tests.support.auth import api_client
from tests.support.dripping import DrippingServer
from tests.support.factories import SubscriptionFactory
from tests.support.processes import WORKER_ENV
from tests.support.subscriber import Answer, Subscriber, stays, wait_until

pytestmark = pytest.mark.e2e

TOTAL = float(WORKER_ENV["HUB_HTTP_TOTAL_TIMEOUT"])
# Threads of the e2e worker (tests/support/processes.py): more dripping requests than this fill it.
WORKER_THREADS = 8


@pytest.fixture
def dripping() -> Iterator[DrippingServer]:
    # 400 bytes at one every 0.5 s: 200 s of answer, each byte well within the 3 s read timeout
    server = DrippingServer(interval=0.5)
    yield server
    server.close()


def _post_hub(fields: list[tuple[str, str]]) -> None:
    response = api_client().post("/hub", urlencode(fields), content_type="application/x-www-form-urlencoded")
    assert response.status_code == 202, response.content


def test_dripping_peers_are_cut_at_the_deadline_and_a_healthy_delivery_still_arrives_promptly(
    hub, subscriber: Subscriber, dripping: DrippingServer
) -> None:
    # given a healthy subscriber
    SubscriptionFactory(topic="healthy", callback=subscriber.url("/healthy"))
    # and more dripping requests than the worker has threads: publish pings whose
    # topics drip, and subscribe requests whose callbacks drip
    _post_hub([("hub.mode", "publish")] + [("hub.url", dripping.url(f"/feed/{n}")) for n in range(8)])
    for n in range(4):
        _post_hub([("hub.mode", "subscribe"), ("hub.topic", "drip"), ("hub.callback", dripping.url(f"/cb/{n}"))])
    wait_until(lambda: len(dripping.connections) >= WORKER_THREADS, timeout=30, what="every worker thread held")
    # when a notification for the healthy subscriber is published just after
    published = time.monotonic()
    services.notification_publish_json(topic="healthy", content={"n": 1})
    # then it arrives once the first dripping requests are cut, not when the peers stop
    (got,) = wait_until(lambda: subscriber.deliveries("/healthy"), timeout=60, what="the healthy delivery")
    assert got.at - published < TOTAL + 4.0
    # and every dripping connection was cut at the deadline
    cut = wait_until(lambda: len(dripping.finished()) >= WORKER_THREADS and dripping.finished(), timeout=30)
    assert all(c.closed - c.opened < TOTAL + 1.5 for c in cut), [round(c.closed - c.opened, 2) for c in cut]


def test_answers_that_used_to_crash_the_task_are_recorded_as_attempts_and_retried(hub, subscriber: Subscriber) -> None:
    # given a subscriber answering a 500 whose body holds a NUL, then a 429 with a 400-digit Retry-After
    subscriber.post_statuses["/odd"] = [
        Answer(status=500, body=b"broken \x00 body"),
        Answer(status=429, headers={"Retry-After": "9" * 400}),
    ]
    SubscriptionFactory(topic="odd", callback=subscriber.url("/odd"))
    # when a notification is published
    services.notification_publish_json(topic="odd", content={"n": 1})
    # then each answer is an attempt with the usual retries, and the third attempt delivers it
    delivery = wait_until(
        lambda: Delivery.objects.filter(status=Delivery.Status.DELIVERED).first(), timeout=40, what="the delivery"
    )
    assert delivery.attempts == 3
    attempts = list(DeliveryAttempt.objects.filter(delivery=delivery).order_by("number"))
    assert [(a.number, a.status_code) for a in attempts] == [(1, 500), (2, 429), (3, 204)]
    assert attempts[0].response_body == "broken \ufffd body"
    # and nothing sends it again
    assert stays(lambda: len(subscriber.deliveries("/odd")) == 3, duration=1.0)
