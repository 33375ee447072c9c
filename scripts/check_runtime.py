"""The end-to-end half of scripts/check-runtime; run it with the runtime venv's python (it calls that venv's tools).

For each broker: a fresh PostgreSQL database, migrate, a token, gunicorn as the
Procfile starts it and `celery -A websubhub worker -B`, then subscribe, publish,
and wait (bounded polling) for the signed delivery at a standard-library
subscriber on 127.0.0.1. Exits 1 with the processes' log tails on failure.
"""

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit
from urllib.request import Request, urlopen

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "RUNTIME.CHECK"
SECRET = "runtime-check-secret"  # noqa: S105 (the check's own throwaway subscription)
# Start-up on two shared cores: Django, gunicorn's workers, Celery and beat.
START_TIMEOUT = 90.0
# Subscribe-to-active and publish-to-delivered, each.
STEP_TIMEOUT = 60.0
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"  # a database no test run uses (they use REDIS_URL)
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


class CheckFailed(Exception):
    pass


def wait_until(condition: Callable[[], bool], what: str, timeout: float, alive: Callable[[], None]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        alive()
        if time.monotonic() > deadline:
            raise CheckFailed(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


class Subscriber:
    """Answers the verification GET with the challenge and records each delivery POST."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.verified = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                challenge = query.get("hub.challenge", [""])[0].encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(challenge)))
                self.end_headers()
                self.wfile.write(challenge)
                outer.verified.set()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.deliveries.append((dict(self.headers.items()), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/callback"

    def signed_delivery(self) -> bool:
        for headers, body in self.deliveries:
            expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            if hmac.compare_digest(headers.get("X-Hub-Signature", ""), expected):
                return True
        return False

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Process:
    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as output:
            # Its own process group: beat and gunicorn's workers go down with it.
            self.popen = subprocess.Popen(  # noqa: S603 (our own fixed command line)
                command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise CheckFailed(f"the {self.name} process exited with status {self.popen.returncode}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(
    method: str, url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    request = Request(url, data=data, method=method, headers=headers or {})  # noqa: S310 (http://127.0.0.1 only)
    try:
        with urlopen(request, timeout=10) as answer:  # noqa: S310
            return answer.status, answer.read()
    except HTTPError as error:
        return error.code, error.read()


def answers(url: str) -> bool:
    try:
        return http("GET", url)[0] == 200
    except OSError:
        return False


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(  # noqa: S603 (our own fixed command line)
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise CheckFailed(f"manage.py {args[0]} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def fresh_database(url: str) -> None:
    """Drop and create the check's own database, so every run starts empty."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    maintenance = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(maintenance, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def default_database_url() -> str:
    """<the database of DATABASE_URL>_runtime on the same server, so parallel checkouts stay apart."""
    base = os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/test"
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "_runtime"))


@contextlib.contextmanager
def running(processes: list[Process]) -> Iterator[None]:
    try:
        yield
    finally:
        for process in processes:
            process.stop()


def check_broker(label: str, broker_env: dict[str, str], database_url: str, work: Path) -> None:
    var = work / label
    var.mkdir(parents=True, exist_ok=True)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("REDIS_URL", "CELERY_BROKER_URL", "PROMETHEUS_MULTIPROC_DIR", "HUB_METRICS_DIR")
    }
    port = free_port()
    env |= {
        "DATABASE_URL": database_url,
        "HUB_VAR_DIR": str(var),
        "DJANGO_SECRET_KEY": "runtime-check-only-secret-key-not-for-production-0123456789",
        "HUB_URL": f"http://127.0.0.1:{port}/hub",
        "HUB_ALLOW_PRIVATE_ADDRESSES": "true",
        "PYTHONUNBUFFERED": "1",
        **broker_env,
    }
    started = time.monotonic()
    fresh_database(database_url)
    manage(env, "migrate", "--noinput", "--verbosity", "0")
    token = manage(env, "hub_token", "runtime-check", "--publish", "--manage").split()[-1]
    # Messages a failed earlier run left in this broker would reach this run's worker.
    purged = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "websubhub", "purge", "-f"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if purged.returncode != 0:
        raise CheckFailed(f"celery purge failed:\n{purged.stdout}{purged.stderr}")
    subscriber = Subscriber()
    web_args = ["--bind", f"127.0.0.1:{port}", "--workers", "2", "--access-logfile", "-"]
    # A node name of its own: a worker of a development run on this host is celery@host.
    worker_args = ["-n", f"runtime-check-{label}-{os.getpid()}@%h"]
    web = Process(
        "web",
        # As the Procfile starts it.
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "websubhub.wsgi:application", *web_args],
        env,
        var / "web.log",
    )
    worker = Process(
        "worker",
        [sys.executable, "-m", "celery", "-A", "websubhub", "worker", "-B", "--loglevel", "INFO", *worker_args],
        env,
        var / "worker.log",
    )
    base = f"http://127.0.0.1:{port}"

    def alive() -> None:
        web.check_alive()
        worker.check_alive()

    auth = {"Authorization": f"Token {token}"}
    try:
        with running([worker, web]):
            wait_until(lambda: answers(f"{base}/readyz"), "the web process (/readyz)", START_TIMEOUT, alive)
            wait_until(lambda: b" ready." in worker.log.read_bytes(), "the worker's ready line", START_TIMEOUT, alive)

            form = {"hub.mode": "subscribe", "hub.topic": TOPIC, "hub.callback": subscriber.url, "hub.secret": SECRET}
            status, body = http("POST", f"{base}/hub", data=urlencode(form).encode())
            if status != 202:
                raise CheckFailed(f"POST /hub answered {status}: {body[:500]!r}")

            def active() -> bool:
                status, body = http("GET", f"{base}/api/subscriptions/", headers=auth)
                return status == 200 and any(s["state"] == "active" for s in json.loads(body)["results"])

            wait_until(active, "the subscription to be verified and active", STEP_TIMEOUT, alive)

            content = json.dumps({"topic": TOPIC, "content": {"check": "runtime", "broker": label}}).encode()
            status, body = http(
                "POST",
                f"{base}/api/notifications/",
                data=content,
                headers={**auth, "Content-Type": "application/json"},
            )
            if status != 202:
                raise CheckFailed(f"POST /api/notifications/ answered {status}: {body[:500]!r}")
            wait_until(subscriber.signed_delivery, "the signed delivery at the subscriber", STEP_TIMEOUT, alive)
    except (CheckFailed, OSError, subprocess.SubprocessError) as error:
        print(f"check-runtime: {label}: FAILED: {error}", file=sys.stderr)
        for process in (worker, web):
            print(f"--- {process.name} log (tail) ---\n{process.tail()}", file=sys.stderr)
        raise SystemExit(1) from error
    finally:
        subscriber.close()
    print(f"check-runtime: {label}: subscribed, published and delivered (signed) in {time.monotonic() - started:.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work-dir", type=Path, required=True, help="where each broker's HUB_VAR_DIR and logs go")
    args = parser.parse_args()
    database_url = os.environ.get("CHECK_RUNTIME_DATABASE_URL") or default_database_url()
    redis_url = os.environ.get("CHECK_RUNTIME_REDIS_URL") or DEFAULT_REDIS_URL
    amqp_url = os.environ.get("CHECK_RUNTIME_AMQP_URL") or DEFAULT_AMQP_URL
    try:
        # Redis: the broker and the cache, as in production.
        check_broker("redis", {"REDIS_URL": redis_url}, database_url, args.work_dir)
        # RabbitMQ as the broker, with no Redis at all: the hub falls back to the database and files.
        check_broker("rabbitmq", {"CELERY_BROKER_URL": amqp_url}, database_url, args.work_dir)
    except CheckFailed as error:
        print(f"check-runtime: FAILED: {error}", file=sys.stderr)
        raise SystemExit(1) from error


if __name__ == "__main__":
    main()
