"""HUB_LOG_FORMAT=json: one JSON object per log line (time, level, logger, message, extras), web and worker alike."""

import json
import logging
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from tests.support.processes import answers, gunicorn_serving
from tests.support.subscriber import wait_until
from websubhub.logformat import JsonFormatter

ROOT = Path(__file__).resolve().parents[2]


def _record(message: str, *args: object, exc_info: object = None, **extra: object) -> logging.LogRecord:
    record = logging.getLogger("subscriptions.services").makeRecord(
        "subscriptions.services", logging.INFO, __file__, 1, message, args, exc_info, extra=extra or None
    )
    return record


def test_a_record_is_one_json_object_with_time_level_logger_and_message() -> None:
    line = JsonFormatter().format(_record("delivery %s of notification %s: attempt %s delivered", 7, 3, 1))
    entry = json.loads(line)
    assert entry["level"] == "INFO"
    assert entry["logger"] == "subscriptions.services"
    assert entry["message"] == "delivery 7 of notification 3: attempt 1 delivered"
    assert datetime.fromisoformat(entry["time"]).utcoffset().total_seconds() == 0
    assert set(entry) == {"time", "level", "logger", "message"}


def test_extra_fields_are_written_and_values_json_cannot_hold_become_text() -> None:
    when = datetime(2030, 1, 2, 3, 4, 5)
    entry = json.loads(JsonFormatter().format(_record("published", notification_id=12, at=when, tags={"a": [1]})))
    assert entry["notification_id"] == 12
    assert entry["at"] == str(when)
    assert entry["tags"] == {"a": [1]}


def test_a_multiline_message_and_a_traceback_stay_on_one_line() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        record = _record("first\nsecond", exc_info=sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "first\nsecond"
    assert "ValueError: bad" in entry["exception"]
    assert "Traceback" in entry["exception"]


def test_non_ascii_is_kept_readable() -> None:
    entry = json.loads(JsonFormatter().format(_record("topic %s", "é")))
    assert entry["message"] == "topic é"


def _django_log_lines(log_format: str) -> list[str]:
    """Log one line through the project's LOGGING in a fresh process; its stderr lines."""
    code = (
        "import logging; import django; django.setup(); "
        "logging.getLogger('subscriptions.services').warning('request %s failed', 5, extra={'attempt': 2})"
    )
    env = {**os.environ, "HUB_LOG_FORMAT": log_format, "DJANGO_SETTINGS_MODULE": "websubhub.settings"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return [line for line in done.stderr.splitlines() if line.strip()]


def test_settings_log_json_when_hub_log_format_is_json() -> None:
    (line,) = _django_log_lines("json")
    entry = json.loads(line)
    assert entry["message"] == "request 5 failed"
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "subscriptions.services"
    assert entry["attempt"] == 2


def test_settings_log_plain_text_by_default() -> None:
    (line,) = _django_log_lines("plain")
    assert line.endswith("WARNING subscriptions.services request 5 failed")


def test_an_unknown_log_format_is_refused_at_startup() -> None:
    env = {**os.environ, "HUB_LOG_FORMAT": "xml", "DJANGO_SETTINGS_MODULE": "websubhub.settings"}
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "HUB_LOG_FORMAT must be plain or json" in done.stderr


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _gunicorn_serving_two_requests(tmp_path: Path, *, log_format: str) -> tuple[str, str]:
    """Start the web server as the Procfile does, ask for /healthz and a missing page, stop it: its stdout, stderr."""
    out, err = tmp_path / "out", tmp_path / "err"
    env = {**os.environ, "HUB_LOG_FORMAT": log_format}
    with (
        out.open("wb") as stdout,
        err.open("wb") as stderr,
        gunicorn_serving("--access-logfile", "-", "--no-control-socket", env=env, stdout=stdout, stderr=stderr) as url,
    ):
        answers(f"{url}/missing")
    return out.read_text(), err.read_text()


def test_gunicorn_with_the_project_config_logs_every_line_as_json(tmp_path: Path) -> None:
    # given the web server as the Procfile starts it, in JSON mode
    # when it serves a request and a request for a missing page
    out, err = _gunicorn_serving_two_requests(tmp_path, log_format="json")
    # then every line it wrote, its own and Django's, is one JSON object
    lines = _json_lines(out) + _json_lines(err)
    loggers = {entry["logger"] for entry in lines}
    assert {"gunicorn.error", "gunicorn.access", "django.request"} <= loggers, lines
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in lines)
    assert any("GET /healthz" in entry["message"] for entry in lines if entry["logger"] == "gunicorn.access")


# The plain format: "time level logger message", the time as logging's asctime.
PLAIN_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+) \S")


def test_gunicorn_with_the_project_config_logs_every_line_in_the_plain_format(tmp_path: Path) -> None:
    # given the web server as the Procfile starts it, in the default (plain) format
    # when it serves a request and a request for a missing page
    out, err = _gunicorn_serving_two_requests(tmp_path, log_format="plain")
    # then every line it wrote, its own, its access lines and Django's, is "time level logger message"
    lines = [line for line in (out + err).splitlines() if line.strip()]
    matches = [PLAIN_LINE.match(line) for line in lines]
    assert all(matches), [line for line, match in zip(lines, matches, strict=True) if not match]
    by_logger = {}
    for line, match in zip(lines, matches, strict=True):
        by_logger.setdefault(match.group(2), []).append(line)
    assert {"gunicorn.error", "gunicorn.access", "django.request"} <= set(by_logger), lines
    assert any('"GET /healthz' in line for line in by_logger["gunicorn.access"])
    assert any("Listening at" in line for line in by_logger["gunicorn.error"])


def test_a_celery_worker_logs_json_when_hub_log_format_is_json(tmp_path: Path) -> None:
    # given a worker of its own (on a queue no task is sent to), in JSON mode
    log = tmp_path / "worker.log"
    env = {**os.environ, "HUB_LOG_FORMAT": "json"}
    command = [sys.executable, "-m", "celery", "-A", "websubhub", "--quiet", "worker", "--pool=threads"]
    command += ["--concurrency=1", "--without-gossip", "--without-mingle", "--loglevel=INFO"]
    command += ["-Q", f"hub.logformat-test-{os.getpid()}", f"--hostname=logformat-{os.getpid()}@%h"]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            # when it is ready
            wait_until(lambda: b" ready." in log.read_bytes(), timeout=60, what="the worker's ready line")
        finally:
            process.terminate()
            process.wait(timeout=30)
    # then its log records are JSON (the start-up lines before logging exists are Python's warnings)
    records = [line for line in log.read_text().splitlines() if line.startswith("{")]
    entries = [json.loads(line) for line in records]
    ready = [entry for entry in entries if entry["message"].endswith(" ready.")]
    assert ready and ready[0]["logger"] == "celery.apps.worker" and ready[0]["level"] == "INFO"
    assert any(entry["logger"].startswith("celery.worker") for entry in entries)


def test_the_plain_format_writes_the_standard_librarys_time_across_seconds() -> None:
    # given the project's plain formatter (from LOG_FORMATTERS, as dictConfig builds it) and the standard library's
    from logging.config import dictConfig

    from websubhub.logformat import LOG_FORMATTERS, PlainFormatter

    logger = logging.getLogger("test-plain-format")
    logger.propagate = False
    dictConfig(
        {
            "version": 1,
            "incremental": False,
            "disable_existing_loggers": False,
            "formatters": {"plain": LOG_FORMATTERS["plain"]},
            "handlers": {"h": {"class": "logging.NullHandler", "formatter": "plain"}},
            "loggers": {"test-plain-format": {"handlers": ["h"], "propagate": False}},
        }
    )
    ours = logger.handlers[0].formatter
    assert isinstance(ours, PlainFormatter)
    theirs = logging.Formatter(LOG_FORMATTERS["plain"]["format"])
    # when records are made within one second, across its end, and back in an earlier one (a clock set back)
    for created in (1_700_000_000.0, 1_700_000_000.4995, 1_700_000_000.999, 1_700_000_001.0004, 1_699_999_999.5):
        record = _record("delivery %s", 7)
        record.created, record.msecs = created, (created - int(created)) * 1000
        # then each line is the standard library's, to the millisecond
        assert ours.format(record) == theirs.format(record)
