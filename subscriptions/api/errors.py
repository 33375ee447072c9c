"""One JSON shape for every refusal of the REST API: {"detail": "...", "errors": {...}}.

`detail` is always a sentence a person can read; `errors` is always there and
maps each field the refusal concerns (or "non_field_errors") to its messages,
naming fields as the JSON API does (`callback`, never the form's `hub.callback`).
"""

from typing import TYPE_CHECKING, Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

if TYPE_CHECKING:
    from subscriptions.services import HubError

NON_FIELD = api_settings.NON_FIELD_ERRORS_KEY
# The services name fields as the /hub form does; the JSON API's names for the same fields.
JSON_FIELD_NAMES = {
    "hub.mode": "mode",
    "hub.topic": "topic",
    "hub.callback": "callback",
    "hub.lease_seconds": "lease_seconds",
    "hub.secret": "secret",
}


def _flatten(errors: Any, prefix: str = "") -> list[str]:
    if isinstance(errors, dict):
        return [line for key, value in errors.items() for line in _flatten(value, f"{prefix}{key}: ")]
    if isinstance(errors, list):
        return [line for value in errors for line in _flatten(value, prefix)]
    return [f"{prefix}{errors}"]


def hub_error_for_api(exc: "HubError") -> tuple[str, str]:
    """The JSON field a HubError concerns and its message, both naming the field as the JSON API does."""
    if exc.field in JSON_FIELD_NAMES:
        name = JSON_FIELD_NAMES[exc.field]
        return name, exc.message.replace(exc.field, name)
    return exc.field or NON_FIELD, exc.message


def refusal_body(detail: str, field: str = NON_FIELD) -> dict[str, Any]:
    return {"detail": detail, "errors": {field: [detail]}}


def refusal(detail: str, status: int, field: str = NON_FIELD) -> Response:
    return Response(refusal_body(detail, field), status=status)


def hub_error_response(exc: "HubError") -> Response:
    field, message = hub_error_for_api(exc)
    return refusal(message, exc.status, field)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(data, dict) and set(data) == {"detail"}:
        # 401, 403, 404, 405, 415, 429, a parse error: about the request as a whole.
        response.data = refusal_body(str(data["detail"]))
        return response
    errors = data if isinstance(data, dict) else {NON_FIELD: data}
    response.data = {"detail": "invalid request: " + "; ".join(_flatten(data)), "errors": errors}
    return response


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """404 for the whole site: JSON under /api/, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse(refusal_body(f"no API endpoint at {request.path}"), status=404)
    return page_not_found(request, exception or Http404())
