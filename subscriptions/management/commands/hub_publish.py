"""python manage.py hub_publish TOPIC (--file F | --json '...') [--content-type T]"""

import json
import sys
from argparse import ArgumentParser
from pathlib import Path
from typing import Any, BinaryIO

from django.core.management.base import BaseCommand, CommandError

from subscriptions import services
from websubhub.hub_settings import hub_settings

DEFAULT_CONTENT_TYPE = "application/octet-stream"
# The notification's content_type column.
MAX_CONTENT_TYPE_LENGTH = 255


class Command(BaseCommand):
    help = (
        "Publish a notification on TOPIC, as POST /api/notifications/ does, and print its id alone on stdout. "
        "The content is a file's exact bytes (--file, '-' for stdin) or a JSON value (--json, sent as compact "
        "UTF-8 application/json, like the API). The hub delivers it to every matching subscription once the "
        "worker spreads it; follow it with GET /api/notifications/<id>/."
    )
    # Tests pass their own stream; otherwise standard input.
    stealth_options = ("stdin",)

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("topic", help="a URL topic (https://example.com/feed) or a dotted topic (UN.CEFACT.TRADE)")
        content = parser.add_mutually_exclusive_group(required=True)
        content.add_argument("--file", metavar="PATH", help="send this file's bytes as they are; '-' reads stdin")
        content.add_argument("--json", metavar="JSON", help="send this JSON value, e.g. '{\"id\": 42}'")
        parser.add_argument(
            "--content-type",
            metavar="TYPE",
            help=f"Content-Type of --file content (default: {DEFAULT_CONTENT_TYPE}); --json is always application/json",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        topic: str = options["topic"]
        try:
            if options["json"] is not None:
                if options["content_type"]:
                    raise CommandError("--content-type applies to --file only: --json always sends application/json")
                notification = services.notification_publish_json(topic=topic, content=_json(options["json"]))
            else:
                content_type = _content_type(options["content_type"] or DEFAULT_CONTENT_TYPE)
                content = self._read(options["file"], options.get("stdin") or sys.stdin)
                notification = services.notification_publish(topic=topic, content=content, content_type=content_type)
        except services.HubError as exc:
            raise CommandError(f"not published: {exc.message}") from None
        # The id alone, so a script can take it: id=$(python manage.py hub_publish ...).
        self.stdout.write(str(notification.pk))

    def _read(self, path: str, stdin: Any) -> bytes:
        # One byte past the limit is enough for the service to refuse it, without reading a huge file.
        limit = hub_settings.HUB_MAX_CONTENT_BYTES + 1
        if path == "-":
            stream: BinaryIO = getattr(stdin, "buffer", stdin)
            return stream.read(limit)
        try:
            with Path(path).open("rb") as file:
                return file.read(limit)
        except OSError as exc:
            raise CommandError(f"cannot read --file {path}: {exc.strerror or exc}") from None


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"--json is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def _content_type(value: str) -> str:
    """A Content-Type fit for an HTTP header: printable ASCII, type/subtype, not too long."""
    value = value.strip()
    if not value.isascii() or not value.isprintable() or len(value) > MAX_CONTENT_TYPE_LENGTH:
        raise CommandError(f"--content-type must be printable ASCII of at most {MAX_CONTENT_TYPE_LENGTH} characters")
    media_type = value.split(";", 1)[0].strip()
    main, slash, sub = media_type.partition("/")
    if not slash or not main or not sub or " " in media_type:
        raise CommandError(f"--content-type must look like type/subtype (text/plain; charset=utf-8), not {value!r}")
    return value
