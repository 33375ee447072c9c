#!/usr/bin/env python3
"""A runnable WebSub subscriber: answers the hub's verification and prints each delivery.

    python examples/subscriber.py --port 9000 --secret s3cret --topic UN.CEFACT

Then subscribe its callback (http://127.0.0.1:9000/ or any path under it)
through the hub's POST /hub with the same topic and secret. It prints one line
per event on stdout:

    listening on http://127.0.0.1:9000/
    verification subscribe UN.CEFACT: confirmed
    delivery 6f1c… on UN.CEFACT.TRADE.CO (application/json, 27 bytes) verified: {"id":42}

Signatures (WebSub §7.1). With --secret, a delivery whose X-Hub-Signature is
missing or wrong is ignored: it is printed as "ignored", its content is not,
and it still gets 202. The spec requires ignoring such a message and allows
acknowledging it with a 2xx; answering as for a good one tells a forger
nothing. Without --secret, deliveries are printed as "unsigned". During a
secret rotation give --secret twice, the new and the old one: a delivery
signed with either is verified.

It needs only the standard library and websubhub/client.py, which it loads
from this checkout by path (or imports, when this file was copied elsewhere),
so any Python 3.11 runs it, without the hub's virtualenv. --port 0 picks a free port,
which the first line reports.
"""

import argparse
import importlib.util
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from urllib.parse import parse_qs, urlsplit


def _load_client() -> ModuleType:
    """websubhub/client.py of this checkout, loaded by path: importing the `websubhub` package would load Celery."""
    path = Path(__file__).resolve().parent.parent / "websubhub" / "client.py"
    if not path.exists():  # this file was copied elsewhere: use an importable copy of the helper
        import websubhub.client

        return websubhub.client
    spec = importlib.util.spec_from_file_location("websubhub_client", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


client = _load_client()
challenge_response = client.challenge_response
parse_link_header = client.parse_link_header
verify_signature = client.verify_signature

# Larger bodies get 413: the hub's own default limit (HUB_MAX_CONTENT_BYTES) is 1 MiB.
MAX_BODY_BYTES = 16 * 1024 * 1024
# Characters of a delivery's body printed; the rest is elided.
PRINT_BODY_CHARS = 2000


def make_handler(
    *, secret: str | list[str] | None, topic: str | None, modes: tuple[str, ...]
) -> type[BaseHTTPRequestHandler]:
    class Subscriber(BaseHTTPRequestHandler):
        server_version = "websubhub-example-subscriber"

        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
            status, body = challenge_response(query, expected_topic=topic, expected_mode=modes)
            mode = _first(query, "hub.mode") or "?"
            requested = _first(query, "hub.topic") or "?"
            if mode == "denied":
                say(f"verification denied {requested}: {_first(query, 'hub.reason') or 'no reason given'}")
            else:
                say(f"verification {mode} {requested}: {'confirmed' if status == 200 else 'refused'}")
            self._answer(status, body)

        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._answer(411, b"")
                return
            if length < 0 or length > MAX_BODY_BYTES:
                self._answer(413, b"")
                return
            body = self.rfile.read(length)
            links = parse_link_header(self.headers.get_all("Link"))
            delivery_id = self.headers.get("X-Hub-Delivery", "-")
            summary = (
                f"delivery {delivery_id} on {links.get('self', '?')} "
                f"({self.headers.get('Content-Type', '?')}, {len(body)} bytes)"
            )
            if not secret:
                say(f"{summary} unsigned: {_preview(body)}")
            elif verify_signature(secret, body, self.headers.get("X-Hub-Signature")):
                say(f"{summary} verified: {_preview(body)}")
            else:
                say(f"{summary} ignored: missing or wrong X-Hub-Signature")
            self._answer(202, b"")

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            # Access log on stderr; stdout carries only the events above.
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    return Subscriber


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _preview(body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    return text if len(text) <= PRINT_BODY_CHARS else f"{text[:PRINT_BODY_CHARS]}… ({len(text)} characters)"


def say(line: str) -> None:
    print(line, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A WebSub subscriber that prints what the hub sends it.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9000, help="port to listen on; 0 picks a free one (default: 9000)")
    parser.add_argument(
        "--secret",
        action="append",
        help="the hub.secret you subscribed with; deliveries without its valid signature are ignored. "
        "Give it twice during a secret rotation (the new and the old one): either verifies",
    )
    parser.add_argument("--topic", help="confirm verification only for this hub.topic (default: any topic)")
    parser.add_argument(
        "--accept-unsubscribe",
        action="store_true",
        help="also confirm unsubscribe requests (off by default, so nobody else can unsubscribe this callback)",
    )
    args = parser.parse_args(argv)
    modes = ("subscribe", "unsubscribe") if args.accept_unsubscribe else ("subscribe",)
    handler = make_handler(secret=args.secret, topic=args.topic, modes=modes)
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    say(f"listening on http://{host}:{port}/")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
