"""The two ways metrics leave a machine: Django's GET /metrics and the WSGI app of manage.py hub_metrics_server."""

import hmac
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.exposition import choose_encoder

from subscriptions.metrics.collectors import HubStateCollector
from websubhub.hub_settings import hub_settings


def multiprocess_registry() -> CollectorRegistry:
    """A registry of every process's counters and histograms on this machine."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(hub_settings.HUB_METRICS_DIR))
    return registry


def token_allows(authorization: str | None) -> bool:
    """Whether a request's Authorization header may read metrics (any, when HUB_METRICS_TOKEN is unset)."""
    token = hub_settings.HUB_METRICS_TOKEN
    if not token:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def unauthorized() -> HttpResponse:
    response = HttpResponse("Metrics need Authorization: Bearer <HUB_METRICS_TOKEN>.\n", status=401)
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text (or OpenMetrics, when asked): counters of every process here plus state gauges."""
    if not token_allows(request.headers.get("Authorization")):
        return unauthorized()
    registry = multiprocess_registry()
    registry.register(HubStateCollector())
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(registry), content_type=content_type)


def worker_metrics_app(environ: dict, start_response: Callable) -> list[bytes]:
    """A WSGI app serving only this machine's counters at /metrics (manage.py hub_metrics_server).

    No state gauges: those come from the web's /metrics, and a second copy
    would double them in any sum across instances.
    """
    if environ.get("PATH_INFO", "/") not in ("/", "/metrics"):
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"Not found: metrics are at /metrics.\n"]
    if not token_allows(environ.get("HTTP_AUTHORIZATION")):
        start_response(
            "401 Unauthorized",
            [("Content-Type", "text/plain; charset=utf-8"), ("WWW-Authenticate", 'Bearer realm="metrics"')],
        )
        return [b"Metrics need Authorization: Bearer <HUB_METRICS_TOKEN>.\n"]
    encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
    body = encoder(multiprocess_registry())
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]
