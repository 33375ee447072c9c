import io
import logging
from collections.abc import Callable

from django.core.handlers.wsgi import LimitedStream, WSGIRequest
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

from subscriptions.api.errors import refusal_body
from websubhub.hub_settings import hub_settings

logger = logging.getLogger(__name__)

# Bytes read from the server per call while reading a chunked body.
CHUNKED_READ_SIZE = 65_536
# Seconds a client is asked to wait when the database is unavailable: about
# what a restart, or a burst that filled every connection, takes to pass.
DATABASE_RETRY_AFTER_SECONDS = 5


class RequestSizeLimitMiddleware:
    """Refuse a body larger than HUB_MAX_REQUEST_BYTES with 413 before anything reads it.

    A body sent with Transfer-Encoding: chunked has no Content-Length, and Django reads
    wsgi.input only up to CONTENT_LENGTH: it would look empty. When the server has decoded
    the chunking and ends the stream at the body's end (gunicorn: wsgi.input_terminated),
    read it here, up to the same limit, and hand Django a body of known length.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = hub_settings.HUB_MAX_REQUEST_BYTES
        if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower() and isinstance(request, WSGIRequest):
            refusal = _read_chunked(request, limit)
            if refusal is not None:
                return refusal
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


def _read_chunked(request: WSGIRequest, limit: int) -> HttpResponse | None:
    """Read a chunked body into memory (at most limit bytes); a refusal when it is too long or unreadable."""
    environ = request.environ
    if not environ.get("wsgi.input_terminated"):
        # Reading to the end of a stream the server does not end would wait for the client to close.
        return _refuse(
            request,
            411,
            "this server cannot read a chunked request body: send a Content-Length header",
        )
    stream = environ["wsgi.input"]
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        # One byte over the limit is enough to know the body is too large.
        try:
            part = stream.read(min(CHUNKED_READ_SIZE, limit + 1 - size))
        except Exception as exc:  # noqa: BLE001 - the server's own parse errors share no narrower base
            return _refuse(request, 400, f"the chunked request body is malformed ({type(exc).__name__})")
        if not part:
            break
        parts.append(part)
        size += len(part)
    if size > limit:
        return _refuse(request, 413, f"the request body is larger than HUB_MAX_REQUEST_BYTES ({limit} bytes)")
    body = b"".join(parts)
    request.META["CONTENT_LENGTH"] = str(len(body))
    request._stream = LimitedStream(io.BytesIO(body), len(body))
    return None


def _refuse(request: HttpRequest, status: int, message: str) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse(refusal_body(message), status=status)
    return HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")
