"""The subscriber status page: `GET /hub/status?hub.callback=...&hub.topic=...`.

A subscriber debugs its own subscription without an operator, as on Google's
hub: state, lease expiry, last successful delivery, last failure (time and
status code) and how many deliveries wait. HTML for people, JSON with
`Accept: application/json`. It never shows content, secrets or other
subscribers, and is throttled like subscribing (HUB_THROTTLE_SUBSCRIBE).
"""

import math
from datetime import datetime

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

from subscriptions import rules, selectors, throttles
from subscriptions.errors import HubError
from subscriptions.models import MAX_CALLBACK_LENGTH
from subscriptions.topics import has_space_or_control

JSON = "application/json"
HTML = "text/html"


def _wants_json(request: HttpRequest) -> bool:
    # A browser's Accept lists text/html first; `curl` (*/*) gets the page too.
    return request.get_preferred_type([HTML, JSON]) == JSON


def _refusal(request: HttpRequest, error: HubError) -> HttpResponse:
    if _wants_json(request):
        field = error.field or "non_field_errors"
        return JsonResponse({"detail": error.message, "errors": {field: [error.message]}}, status=error.status)
    return HttpResponse(error.message + "\n", status=error.status, content_type="text/plain; charset=utf-8")


def _single(request: HttpRequest, name: str) -> str:
    values = request.GET.getlist(name)
    if len(values) > 1:
        raise HubError(f"{name} was given more than once", field=name)
    if not values or not values[0]:
        raise HubError(f"{name} is required: GET /hub/status?hub.callback=...&hub.topic=...", field=name)
    return values[0]


def _lookup(request: HttpRequest) -> tuple[str, str]:
    """The (topic key, callback) the query names; raises HubError saying what is wrong."""
    callback = _single(request, "hub.callback")
    topic = _single(request, "hub.topic")
    if len(callback) > MAX_CALLBACK_LENGTH:
        raise HubError(f"hub.callback is longer than {MAX_CALLBACK_LENGTH} characters", field="hub.callback")
    if has_space_or_control(callback):
        raise HubError("hub.callback contains whitespace or control characters", field="hub.callback")
    return rules.topic_key_for_subscription(topic), callback


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def status_document(status: selectors.SubscriptionStatus) -> dict[str, object]:
    """The JSON answer: the status's fields, times in ISO 8601."""
    return {
        "topic": status.topic,
        "callback": status.callback,
        "state": status.state,
        "paused_at": _iso(status.paused_at),
        "lease_expires_at": _iso(status.lease_expires_at),
        "last_delivered_at": _iso(status.last_delivered_at),
        "last_failure_at": _iso(status.last_failure_at),
        "last_failure_status_code": status.last_failure_status_code,
        "last_failure_error": status.last_failure_error,
        "deliveries_waiting": status.deliveries_waiting,
        "deliveries_waiting_capped": status.deliveries_waiting_capped,
    }


def subscription_status_page(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        response = _refusal(request, HubError("GET /hub/status?hub.callback=...&hub.topic=...", status=405))
        response["Allow"] = "GET, HEAD"
        return response
    try:
        topic_key, callback = _lookup(request)
        wait = throttles.status_wait(request)
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            response = _refusal(
                request,
                HubError(f"Too many requests: try again in {seconds} seconds (HUB_THROTTLE_SUBSCRIBE).", status=429),
            )
            response["Retry-After"] = str(seconds)
            return response
        status = selectors.subscription_status(topic_key=topic_key, callback=callback)
        if status is None:
            raise HubError("there is no subscription of this callback to this topic", status=404)
    except HubError as exc:
        return _refusal(request, exc)
    if _wants_json(request):
        return JsonResponse(status_document(status))
    html = render_to_string("hub/status.html", {"status": status, "document": status_document(status)}, request)
    return HttpResponse(html)
