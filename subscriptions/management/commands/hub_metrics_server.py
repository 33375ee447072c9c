"""python manage.py hub_metrics_server [--addr A] [--port N]"""

import logging
import socketserver
from argparse import ArgumentParser
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.core.management.base import BaseCommand

from subscriptions import metrics
from websubhub.hub_settings import hub_settings

logger = logging.getLogger(__name__)

# Commonly left free by other exporters (the OpenTelemetry Prometheus exporter's default).
DEFAULT_PORT = 9464


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        # Each scrape would print an unformatted access line; keep them out of the hub's logs.
        logger.debug("metrics scrape: " + format, *args)


class Command(BaseCommand):
    help = (
        "Serve this machine's worker metrics (the counters in HUB_METRICS_DIR) over HTTP at /metrics, for a "
        "machine that runs Celery workers and no web process. Where web and workers share a machine, the web's "
        "GET /metrics already includes them. Honours HUB_METRICS_TOKEN."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--addr", default="127.0.0.1", help="address to listen on (0.0.0.0 for all; default %(default)s)"
        )
        parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on (default %(default)s)")

    def handle(self, *args: Any, addr: str, port: int, **options: Any) -> None:
        server = make_server(
            addr, port, metrics.worker_metrics_app, server_class=_ThreadingServer, handler_class=_QuietHandler
        )
        self.stdout.write(
            f"serving the metrics in {hub_settings.HUB_METRICS_DIR} at http://{addr}:{server.server_port}/metrics"
        )
        self.stdout.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
