from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from subscriptions.api.errors import refusal_body


class RequestSizeLimitMiddleware:
    """Refuse a body larger than HUB_MAX_REQUEST_BYTES with 413 before anything reads it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.HUB_MAX_REQUEST_BYTES
        raw = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(raw)
        except ValueError:
            return _refuse(request, 400, "the Content-Length header is not a number")
        if length > limit:
            return _refuse(request, 413, f"the request body is larger than HUB_MAX_REQUEST_BYTES ({limit} bytes)")
        return self.get_response(request)


def _refuse(request: HttpRequest, status: int, message: str) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse(refusal_body(message), status=status)
    return HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")
