"""One JSON shape for every refusal of the REST API: {"detail": "...", "errors": {...}}.

`detail` is always a sentence a person can read; `errors` appears for invalid
input and maps each field (or "non_field_errors") to its messages.
"""

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def _flatten(errors: Any, prefix: str = "") -> list[str]:
    if isinstance(errors, dict):
        return [line for key, value in errors.items() for line in _flatten(value, f"{prefix}{key}: ")]
    if isinstance(errors, list):
        return [line for value in errors for line in _flatten(value, prefix)]
    return [f"{prefix}{errors}"]


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(data, dict) and set(data) == {"detail"}:
        return response
    errors = data if isinstance(data, dict) else {"non_field_errors": data}
    response.data = {"detail": "invalid request: " + "; ".join(_flatten(data)), "errors": errors}
    return response


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """404 for the whole site: JSON under /api/, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": f"no API endpoint at {request.path}"}, status=404)
    return page_not_found(request, exception or Http404())
