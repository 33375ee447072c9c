"""Replay that tells the truth: the delivery page's Retry button, a confirmation before replaying deliveries the
subscriber refused (4xx other than 408/429), and the truth about deliveries of a paused subscription."""

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from subscriptions import selectors
from subscriptions.models import Delivery, Subscription
from tests.support.auth import staff_client
from tests.support.factories import DeliveryFactory, SubscriptionFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_broker")]

DELIVERY_LIST = "/admin/subscriptions/delivery/"
SUBSCRIPTION_LIST = "/admin/subscriptions/subscription/"


def _failed(subscription: Subscription | None = None, code: int | None = 503) -> Delivery:
    fields = {"subscription": subscription} if subscription else {}
    return DeliveryFactory(
        status=Delivery.Status.FAILED, attempts=6, last_status_code=code, last_error=f"HTTP {code}", **fields
    )


def _status(delivery: Delivery) -> str:
    return Delivery.objects.get(pk=delivery.pk).status


def _messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.fixture
def operator() -> Client:
    return staff_client("operator", "view_delivery", "change_delivery", "view_subscription", "change_subscription")


def test_delivery_page_offers_retry_only_for_a_failed_delivery_and_with_the_permission(operator) -> None:
    failed, delivered = _failed(), DeliveryFactory(status=Delivery.Status.DELIVERED)
    viewer = staff_client("viewer", "view_delivery")

    assert "retry-delivery" in operator.get(f"{DELIVERY_LIST}{failed.pk}/change/").content.decode()
    assert "retry-delivery" not in operator.get(f"{DELIVERY_LIST}{delivered.pk}/change/").content.decode()
    assert "retry-delivery" not in viewer.get(f"{DELIVERY_LIST}{failed.pk}/change/").content.decode()
    assert viewer.post(f"{DELIVERY_LIST}{failed.pk}/retry/").status_code == 403
    assert operator.get(f"{DELIVERY_LIST}{failed.pk}/retry/").status_code == 403
    assert _status(failed) == Delivery.Status.FAILED


def test_retry_button_sends_a_503_failure_again_at_once(operator, django_capture_on_commit_callbacks) -> None:
    failed = _failed(code=503)

    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = operator.post(f"{DELIVERY_LIST}{failed.pk}/retry/")

    assert response.status_code == 302 and response["Location"] == f"{DELIVERY_LIST}{failed.pk}/change/"
    assert _status(failed) == Delivery.Status.PENDING
    assert len(queued) == 1  # enqueued once the replay commits
    assert "1 failed deliveries sent again." in _messages(response)


@pytest.mark.parametrize("code", [408, 429])
def test_timeouts_and_slow_downs_are_not_called_refusals(operator, code) -> None:
    failed = _failed(code=code)

    assert operator.post(f"{DELIVERY_LIST}{failed.pk}/retry/").status_code == 302
    assert _status(failed) == Delivery.Status.PENDING


def test_retrying_a_refused_delivery_warns_before_it_sends(operator) -> None:
    failed = _failed(code=422)

    # when the operator presses Retry
    page = operator.post(f"{DELIVERY_LIST}{failed.pk}/retry/")

    # then a confirmation says it will likely fail again, and nothing is sent yet
    text = page.content.decode()
    assert page.status_code == 200 and "will likely fail again" in text and "HTTP 422" in text
    assert _status(failed) == Delivery.Status.FAILED

    # and confirming sends it
    response = operator.post(f"{DELIVERY_LIST}{failed.pk}/retry/", {"replay_confirmed": "yes"})
    assert response.status_code == 302 and _status(failed) == Delivery.Status.PENDING


def test_list_replay_of_mixed_failures_can_leave_the_refused_ones_out(operator) -> None:
    subscription = SubscriptionFactory()
    refused = [_failed(subscription, 422) for _ in range(3)]
    busy = _failed(subscription, 503)
    selection = {"action": "retry", "_selected_action": [d.pk for d in [*refused, busy]], "index": "0"}

    page = operator.post(DELIVERY_LIST, selection)
    text = page.content.decode()
    assert page.status_code == 200
    assert "3 of them will likely fail again" in text and "send only the other 1" in text
    # the selection passes through the confirmation step
    for delivery in [*refused, busy]:
        assert f'name="_selected_action" value="{delivery.pk}"' in text

    response = operator.post(DELIVERY_LIST, {**selection, "replay_confirmed": "yes", "replay_skip_refused": "on"})

    assert response.status_code == 302
    assert _status(busy) == Delivery.Status.PENDING
    assert {_status(d) for d in refused} == {Delivery.Status.FAILED}
    assert "1 failed deliveries sent again." in _messages(response)


def test_replay_for_a_paused_subscription_says_they_wait_and_offers_resume(operator) -> None:
    paused = SubscriptionFactory(state=Subscription.State.PAUSED, pause_reason="paused by an operator")
    failed = _failed(paused, 503)
    act = f"{SUBSCRIPTION_LIST}{paused.pk}/act/retry_failed/"

    # the button first tells that the deliveries would wait, and offers to resume
    page = operator.post(act).content.decode()
    assert "belong to paused subscriptions" in page and "wait for its resume" in page
    assert 'name="replay_resume_first"' in page
    assert f"/admin/subscriptions/subscription/{paused.pk}/change/" in page
    assert _status(failed) == Delivery.Status.FAILED

    # sent without resuming: the message does not pretend they were delivered
    response = operator.post(act, {"replay_confirmed": "yes"})
    said = " ".join(_messages(response))
    assert "1 failed deliveries sent again." in said and "are not sent yet: they wait for the resume" in said
    assert Subscription.objects.get(pk=paused.pk).state == Subscription.State.PAUSED


def test_replay_can_resume_the_paused_subscription_first(operator) -> None:
    paused = SubscriptionFactory(state=Subscription.State.PAUSED)
    failed = _failed(paused, 503)

    response = operator.post(
        f"{DELIVERY_LIST}{failed.pk}/retry/", {"replay_confirmed": "yes", "replay_resume_first": "on"}
    )

    assert response.status_code == 302
    assert Subscription.objects.get(pk=paused.pk).state == Subscription.State.ACTIVE
    assert _status(failed) == Delivery.Status.PENDING
    assert any("1 paused subscriptions resumed first" in m for m in _messages(response))


def test_resume_is_neither_offered_nor_done_without_the_subscription_change_permission() -> None:
    retrier = staff_client("retrier", "view_delivery", "change_delivery")
    paused = SubscriptionFactory(state=Subscription.State.PAUSED)
    failed = _failed(paused, 503)

    page = retrier.post(f"{DELIVERY_LIST}{failed.pk}/retry/").content.decode()
    assert "belong to paused subscriptions" in page and "replay_resume_first" not in page
    retrier.post(f"{DELIVERY_LIST}{failed.pk}/retry/", {"replay_confirmed": "yes", "replay_resume_first": "on"})

    assert Subscription.objects.get(pk=paused.pk).state == Subscription.State.PAUSED


def test_replay_outlook_makes_three_queries_whatever_the_selection() -> None:
    subscription = SubscriptionFactory(state=Subscription.State.PAUSED)
    for code in [422, 422, 404, 503, None]:
        _failed(subscription, code)
    DeliveryFactory(status=Delivery.Status.DELIVERED, last_status_code=400)  # not a dead letter

    with CaptureQueriesContext(connection) as queries:
        outlook = selectors.replay_outlook(Delivery.objects.all())

    assert len(queries) == 3
    assert outlook == selectors.ReplayOutlook(
        failed=5, refused=3, refused_codes=[404, 422], held=5, paused_subscriptions=[subscription.pk]
    )
