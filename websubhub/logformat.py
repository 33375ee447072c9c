"""The hub's log line formats (HUB_LOG_FORMAT): plain text, or JSON lines for log shippers that parse fields.

Named logformat, not logging, so that `import logging` inside this package
still finds the standard library.
"""

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

# The hub's two line formats (HUB_LOG_FORMAT), for logging.config.dictConfig: Django's
# LOGGING (settings.py) and gunicorn's logconfig_dict (gunicorn.conf.py) both use them.
LOG_FORMATTERS: dict[str, dict[str, str]] = {
    "plain": {
        "class": "websubhub.logformat.PlainFormatter",
        "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
    },
    "json": {"()": "websubhub.logformat.JsonFormatter"},
}


def log_format(value: str) -> str:
    """The HUB_LOG_FORMAT value, checked: "plain" or "json"."""
    name = value.strip().lower()
    if name not in LOG_FORMATTERS:
        raise ValueError("HUB_LOG_FORMAT must be plain or json")
    return name


# Attributes every LogRecord has; anything else on a record came from `extra=`
# (or a library such as Celery's task formatter) and is written as a field.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class PlainFormatter(logging.Formatter):
    """logging.Formatter whose asctime is worked out once a second, not once a record.

    Formatting the time (`time.strftime` of `localtime`) was about a third of a
    publish's log line (bench/RESULTS.md); the text is the standard library's,
    "2026-12-01 16:42:18,250", to the millisecond.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (whole second, its text); one tuple, replaced whole, so threads never see half of one.
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached = self._second
        if cached[0] != second:
            cached = (second, time.strftime(self.default_time_format, self.converter(record.created)))
            self._second = cached
        return self.default_msec_format % (cached[1], record.msecs)


class JsonFormatter(logging.Formatter):
    """{"time", "level", "logger", "message", extras..., "exception"?}: one line of JSON per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra that JSON cannot hold (a datetime, a UUID) is written as text.
        return json.dumps(entry, ensure_ascii=False, default=str)
