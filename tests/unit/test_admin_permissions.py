"""Every admin action, and every button that runs one, is offered and run only with its permission.

A staff user who may only look (the view permissions) sees no action that
writes, and a forged POST of one changes nothing.
"""

import pytest
from axes.models import AccessAttempt
from django.contrib import admin
from django.test import Client

from subscriptions import admin as hub_admin
from subscriptions.models import Delivery, Subscription
from tests.support.auth import staff_client
from tests.support.factories import DeliveryFactory

pytestmark = pytest.mark.django_db

DELIVERY_LIST = "/admin/subscriptions/delivery/"
SUBSCRIPTION_LIST = "/admin/subscriptions/subscription/"


def _offered(client: Client, url: str) -> set[str]:
    response = client.get(url)
    assert response.status_code == 200
    form = response.context["action_form"]  # None when no action is offered
    return {name for name, _ in form.fields["action"].choices if name} if form is not None else set()


@pytest.fixture
def failed() -> Delivery:
    return DeliveryFactory(status=Delivery.Status.FAILED, attempts=3, last_error="503 Service Unavailable")


def test_every_admin_action_names_its_permissions() -> None:
    # Every model the admin shows (the hub's, auth's, django-axes'), and the site-wide actions.
    site_actions = [name for name, _ in admin.site.actions]
    for model_admin in admin.site._registry.values():
        for name in [*(model_admin.actions or ()), *site_actions]:
            action, _, _ = model_admin.get_action(name)
            assert getattr(action, "allowed_permissions", ()), f"{type(model_admin).__name__}.{name}"
    assert isinstance(admin.site._registry[AccessAttempt], hub_admin.AccessAttemptAdmin)


def test_delivery_retry_is_neither_offered_nor_run_for_a_staff_user_who_may_only_view(
    failed, django_capture_on_commit_callbacks
) -> None:
    viewer = staff_client("viewer", "view_delivery")

    assert "retry" not in _offered(viewer, DELIVERY_LIST)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        viewer.post(DELIVERY_LIST, {"action": "retry", "_selected_action": [failed.pk]})

    assert Delivery.objects.get(pk=failed.pk).status == Delivery.Status.FAILED
    assert queued == []


def test_delivery_retry_runs_for_a_user_with_the_change_permission(failed, django_capture_on_commit_callbacks) -> None:
    operator = staff_client("operator", "view_delivery", "change_delivery")

    assert "retry" in _offered(operator, DELIVERY_LIST)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = operator.post(DELIVERY_LIST, {"action": "retry", "_selected_action": [failed.pk]})

    assert response.status_code == 302
    assert Delivery.objects.get(pk=failed.pk).status == Delivery.Status.PENDING
    assert len(queued) == 1
    # The delivery page itself stays read-only.
    page = operator.get(f"{DELIVERY_LIST}{failed.pk}/change/").content.decode()
    assert 'name="_save"' not in page


def test_subscription_actions_and_buttons_are_hidden_and_refused_for_a_viewer(failed) -> None:
    viewer = staff_client("viewer", "view_subscription", "view_delivery")
    pk = failed.subscription_id

    assert _offered(viewer, SUBSCRIPTION_LIST) == set()
    page = viewer.get(f"{SUBSCRIPTION_LIST}{pk}/change/").content.decode()
    assert "/act/" not in page
    for action in ("retry_failed", "pause", "resume", "expire_now"):
        assert viewer.post(f"{SUBSCRIPTION_LIST}{pk}/act/{action}/").status_code == 403, action
    viewer.post(SUBSCRIPTION_LIST, {"action": "pause", "_selected_action": [pk]})

    assert Subscription.objects.get(pk=pk).state == Subscription.State.ACTIVE
    assert Delivery.objects.get(pk=failed.pk).status == Delivery.Status.FAILED


def test_retrying_a_subscriptions_deliveries_also_needs_the_delivery_change_permission(
    failed, django_capture_on_commit_callbacks
) -> None:
    # given an operator who may change subscriptions but not deliveries
    editor = staff_client("editor", "view_subscription", "change_subscription")
    pk = failed.subscription_id

    # then pause and the rest are offered, retry is not, and a forged retry is refused
    assert _offered(editor, SUBSCRIPTION_LIST) == {"pause", "resume", "expire_now"}
    page = editor.get(f"{SUBSCRIPTION_LIST}{pk}/change/").content.decode()
    assert "/act/pause/" in page and "/act/retry_failed/" not in page
    assert editor.post(f"{SUBSCRIPTION_LIST}{pk}/act/retry_failed/").status_code == 403
    assert Delivery.objects.get(pk=failed.pk).status == Delivery.Status.FAILED
    assert editor.post(f"{SUBSCRIPTION_LIST}{pk}/act/pause/").status_code == 302
    assert Subscription.objects.get(pk=pk).state == Subscription.State.PAUSED

    # and with the delivery change permission as well, the retry runs
    operator = staff_client("operator", "view_subscription", "change_subscription", "change_delivery")
    assert "retry_failed" in _offered(operator, SUBSCRIPTION_LIST)
    with django_capture_on_commit_callbacks(execute=False):
        # The subscription is paused now: the replay asks first (its deliveries would wait), then runs.
        assert operator.post(f"{SUBSCRIPTION_LIST}{pk}/act/retry_failed/").status_code == 200
        confirmed = {"replay_confirmed": "yes"}
        assert operator.post(f"{SUBSCRIPTION_LIST}{pk}/act/retry_failed/", confirmed).status_code == 302
    assert Delivery.objects.get(pk=failed.pk).status == Delivery.Status.PENDING
