import logging
from collections.abc import Callable

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

# Seconds a client is asked to wait when the database is unavailable: about
# what a restart, or a burst that filled every connection, takes to pass.
DATABASE_RETRY_AFTER_SECONDS = 5


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


class DatabaseUnavailableMiddleware:
    """Answer 503 with Retry-After, not 500, when a view finds the database unavailable.

    The database refused a connection (down, restarting, out of connections),
    or every pooled connection stayed busy for DATABASE_POOL_TIMEOUT: nothing
    is wrong with the request, and the same request later will likely work.
    DRF's views hand such errors on to here (the API's exception handler
    leaves them), so /api/ and /hub both get them.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        # The path only: a query string may carry credentials.
        logger.warning("database unavailable for %s %s: %s", request.method, request.path, exception)
        response = _refuse(request, 503, "the database is unavailable; try again later")
        response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        return response


def _refuse(request: HttpRequest, status: int, message: str) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": message}, status=status)
    return HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")
