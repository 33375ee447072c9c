"""A fast subscriber for the benchmark: one asyncio (aiohttp) process on 127.0.0.1.

* GET on any path with hub.challenge: echoes the challenge (verification of intent).
* POST on any path: records (path, X-Hub-Delivery, arrival time, body) and answers 204.
  A path that starts with the configured hang prefix waits `hang_seconds` before
  answering, so the hub's read timeout fires first.
* Control endpoints under /_bench/: GET stats (counts), GET records (everything
  recorded, as JSON lines), GET wait?posts=N&timeout=S (answers the stats and the
  last body as soon as N POSTs are recorded, or after S seconds), POST reset, POST config
  ({"hang_prefix": ..., "hang_seconds": ...}).

Usage: python bench/sink.py --port PORT  (prints "ready <port>" on stdout when listening).
"""

import argparse
import asyncio
import json
import time

from aiohttp import web

# Never hang (or hold a waiting client) longer than this, whatever a client asks: every wait is bounded.
MAX_HANG_SECONDS = 60.0


class Sink:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, float, bytes]] = []
        self.ids: set[str] = set()
        self.gets = 0
        self.hung = 0
        self.hang_prefix = "/hang/"
        self.hang_seconds = 0.0
        # Set (and replaced) on every recorded POST: what GET /_bench/wait waits on.
        self.changed = asyncio.Event()

    def record(self, entry: tuple[str, str, float, bytes]) -> None:
        self.records.append(entry)
        self.ids.add(entry[1])
        self.changed.set()
        self.changed = asyncio.Event()

    async def callback(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            self.gets += 1
            challenge = request.query.get("hub.challenge", "")
            return web.Response(text=challenge, status=200)
        body = await request.read()
        path = request.path
        if self.hang_seconds and path.startswith(self.hang_prefix):
            self.hung += 1
            await asyncio.sleep(self.hang_seconds)
            return web.Response(status=204)
        self.record((path, request.headers.get("X-Hub-Delivery", ""), time.time(), body))
        return web.Response(status=204)

    def counts(self) -> dict:
        return {
            "posts": len(self.records),
            "unique_delivery_ids": len(self.ids),
            "gets": self.gets,
            "hung": self.hung,
            "first": self.records[0][2] if self.records else None,
            "last": self.records[-1][2] if self.records else None,
        }

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.counts())

    async def wait(self, request: web.Request) -> web.Response:
        """The stats once `posts` POSTs are recorded (or after `timeout` seconds): arrival without polling."""
        wanted = int(request.query.get("posts", "1"))
        deadline = time.monotonic() + min(MAX_HANG_SECONDS, float(request.query.get("timeout", "10")))
        while len(self.records) < wanted:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                break
        last_body = self.records[-1][3].decode("utf-8", "replace") if self.records else None
        return web.json_response({**self.counts(), "last_body": last_body})

    async def dump(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        chunk: list[bytes] = []
        for path, delivery_id, arrived, body in self.records:
            chunk.append(
                json.dumps({"p": path, "d": delivery_id, "t": arrived, "b": body.decode("utf-8", "replace")}).encode()
                + b"\n"
            )
            if len(chunk) >= 5000:
                await response.write(b"".join(chunk))
                chunk = []
        if chunk:
            await response.write(b"".join(chunk))
        await response.write_eof()
        return response

    async def reset(self, request: web.Request) -> web.Response:
        self.records = []
        self.ids = set()
        self.gets = 0
        self.hung = 0
        return web.json_response({"ok": True})

    async def config(self, request: web.Request) -> web.Response:
        data = await request.json()
        self.hang_prefix = str(data.get("hang_prefix", self.hang_prefix))
        self.hang_seconds = min(MAX_HANG_SECONDS, float(data.get("hang_seconds", self.hang_seconds)))
        return web.json_response({"hang_prefix": self.hang_prefix, "hang_seconds": self.hang_seconds})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    sink = Sink()
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_get("/_bench/stats", sink.stats)
    app.router.add_get("/_bench/records", sink.dump)
    app.router.add_get("/_bench/wait", sink.wait)
    app.router.add_post("/_bench/reset", sink.reset)
    app.router.add_post("/_bench/config", sink.config)
    app.router.add_route("*", "/{tail:.*}", sink.callback)

    async def announce(_app: web.Application) -> None:
        print(f"ready {args.port}", flush=True)

    app.on_startup.append(announce)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None, backlog=1024)


if __name__ == "__main__":
    main()
