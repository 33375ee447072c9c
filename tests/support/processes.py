"""Process helpers for end-to-end tests: the real Celery worker under test, the broker it reads, and a free
port and a readiness probe for a web server a test starts.

The worker runs `celery -A websubhub worker --beat` as a subprocess against the
broker the settings name (Redis when REDIS_URL is set, else the filesystem
broker) and the test database.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO
from urllib.error import HTTPError
from urllib.request import urlopen

from django.db import connection
from kombu import Consumer, Message

from tests.support.subscriber import wait_until

ROOT = Path(__file__).resolve().parents[2]

# Settings of the worker under test: quick retries and short timeouts so that
# failure paths finish in seconds; beat runs the periodic tasks every second.
WORKER_ENV = {
    "HUB_URL": "http://hub.test/hub",
    "HUB_DELIVERY_MAX_RETRIES": "3",
    "HUB_RETRY_BACKOFF_BASE": "1",
    "HUB_RETRY_BACKOFF_MAX": "2",
    "HUB_HTTP_CONNECT_TIMEOUT": "2",
    "HUB_HTTP_READ_TIMEOUT": "3",
    "HUB_HTTP_TOTAL_TIMEOUT": "4",
    "HUB_TOPIC_DENYLIST": r"^https?://denied\.example/",
    "HUB_EXPIRE_INTERVAL": "1",
    "HUB_SWEEP_INTERVAL": "1",
    "HUB_SWEEP_GRACE_SECONDS": "3",
    "HUB_CALLBACK_FAILURE_PAUSE": "6",
    "HUB_CALLBACK_PAUSE_COOLDOWN": "2",
    "HUB_RETRY_AFTER_MAX": "5",
    # Waits over a second are kept in the database and sent by beat's hub.enqueue_due
    # (every second by default), so the end-to-end tests take that path too.
    "HUB_BROKER_MAX_COUNTDOWN": "1",
    # One process, so that a test sees and kills the whole worker (test_e2e_siblings.py runs several).
    "HUB_WORKER_PROCESSES": "1",
    # No purge by the worker's beat: the tests that purge call it themselves and count what it removed.
    "HUB_RETENTION_DAYS": "0",
    "HUB_ALLOW_PRIVATE_ADDRESSES": "true",
}
WORKER_READY_TIMEOUT = 60


def _database_url() -> str:
    """The URL of the test database pytest-django created, for the worker process."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    if connection.vendor == "postgresql":
        user = settings.get("USER") or ""
        password = f":{settings['PASSWORD']}" if settings.get("PASSWORD") else ""
        auth = f"{user}{password}@" if user else ""
        port = f":{settings['PORT']}" if settings.get("PORT") else ""
        return f"postgres://{auth}{settings.get('HOST') or 'localhost'}{port}/{settings['NAME']}"
    raise RuntimeError(f"no worker database URL for {connection.vendor}")


class WorkerProcess:
    def __init__(self, database_url: str, log_dir: Path, *, name: str = "", env: dict[str, str] | None = None) -> None:
        self.name = name or f"e2e-{os.getpid()}"
        self.log_path = log_dir / f"{name or 'worker'}.log"
        self.env = {**os.environ, **WORKER_ENV, "DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1", **(env or {})}
        # The test process's settings exported this; a real worker starts without it.
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.schedule = log_dir / "celerybeat-schedule"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "websubhub",
            "worker",
            "--beat",
            f"--schedule={self.schedule}",
            "--pool=threads",
            "--concurrency=8",
            "--without-gossip",
            "--without-mingle",
            "--loglevel=INFO",
            f"--hostname={self.name}@%h",
        ]
        before = self.log_path.read_bytes().count(b" ready.") if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        # Its own process group: `--beat` runs beat in a child process, which a
        # kill must take down too (an orphaned beat would go on sending tasks).
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + WORKER_READY_TIMEOUT
        while self.log_path.read_bytes().count(b" ready.") <= before:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Celery worker did not start:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.process.wait()
        self._signal_group(signal.SIGKILL)  # whatever of the group outlived the main process

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: no warm shutdown, nothing acknowledged."""
        if self.process is not None and self.process.poll() is None:
            self._signal_group(signal.SIGKILL)
            self.process.wait()

    def _signal_group(self, signum: int) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def ensure_running(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self.start()

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def broker_flush() -> None:
    """Empty the broker, as a Redis restarted without persistence would be."""
    from django.conf import settings

    if settings.REDIS_URL and settings.CELERY_BROKER_URL == settings.REDIS_URL:
        import redis

        redis.Redis.from_url(settings.REDIS_URL).flushdb()
        return
    if settings.CELERY_BROKER_URL.startswith("filesystem"):
        for message in (settings.BROKER_DIR / "data").glob("*"):
            message.unlink(missing_ok=True)
        return
    raise RuntimeError(f"no way to flush the broker {settings.CELERY_BROKER_URL.split(':')[0]}")


def queue_drain(queue_name: str, *, requeue: bool = False) -> list[Message]:
    """Every message in a queue of the test run's broker now, taken off it (or, with `requeue`, put back)."""
    from websubhub.celery import app

    taken: list[Message] = []

    def take(_: object, message: Message) -> None:
        taken.append(message)
        if not requeue:
            message.ack()

    with app.connection_for_read() as connection:
        with Consumer(connection, queues=[app.amqp.queues[queue_name]], accept=["json"], callbacks=[take]):
            while True:
                try:
                    connection.drain_events(timeout=1.0)
                except TimeoutError:
                    break
        for message in taken if requeue else ():
            message.requeue()
    return taken


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str) -> bool:
    """True once something answers HTTP at url, whatever the status."""
    try:
        with urlopen(url, timeout=2):
            return True
    except HTTPError:
        return True
    except OSError:
        return False


# The web server as the Procfile starts it.
GUNICORN = (sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "websubhub.wsgi:application")


@contextlib.contextmanager
def gunicorn_serving(
    *options: str, env: Mapping[str, str], stdout: IO[bytes], stderr: IO[bytes] | int
) -> Iterator[str]:
    """The web server as the Procfile starts it, one worker with `options`, on a free port of 127.0.0.1:
    its base URL once it answers /healthz; stopped on the way out."""
    port = free_port()
    command = [*GUNICORN, "--bind", f"127.0.0.1:{port}", "--workers", "1", *options]
    process = subprocess.Popen(command, cwd=ROOT, env=dict(env), stdout=stdout, stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(f"{url}/healthz"), timeout=30, what="gunicorn")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
