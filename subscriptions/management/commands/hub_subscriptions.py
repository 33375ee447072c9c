"""python manage.py hub_subscriptions [--topic T | --matching T] [--callback C] [--state S] [--limit N]"""

from argparse import ArgumentParser
from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db.models import BooleanField, ExpressionWrapper, Q, QuerySet
from django.utils import timezone

from subscriptions import selectors
from subscriptions.models import Subscription
from subscriptions.topics import InvalidTopic, publish_keys, subscription_key

COLUMNS = ("id", "state", "topic", "callback", "expires_at", "secret")
DEFAULT_LIMIT = 100
# Rows read per database round trip, and how often the progress line moves.
CHUNK = 2000
PROGRESS_EVERY = 5000
STATES = ("active", "paused", "expired")


class Command(BaseCommand):
    help = (
        "List subscriptions as a plain text table, newest first: id, state (active, paused, or expired once "
        "the lease has ended), topic, callback, expires_at (UTC) and whether a secret is set. Secrets are "
        "never shown."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        topic = parser.add_mutually_exclusive_group()
        topic.add_argument(
            "--topic",
            help="subscriptions to this topic, however it was written (UN.CEFACT, un.cefact and UN.CEFACT.* are one)",
        )
        topic.add_argument(
            "--matching",
            metavar="TOPIC",
            help="subscriptions a notification on TOPIC reaches (UN.CEFACT.TRADE finds UN and UN.CEFACT)",
        )
        parser.add_argument("--callback", help="only callbacks whose URL contains this text (a host, a path)")
        parser.add_argument("--state", choices=STATES, help="only subscriptions in this state")
        parser.add_argument(
            "--limit", type=int, default=DEFAULT_LIMIT, help=f"show at most N rows (default {DEFAULT_LIMIT}; 0: all)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["limit"] < 0:
            raise CommandError("--limit must be 0 (all) or more")
        now = timezone.now()
        subscriptions = self._filtered(options, now)
        limit = options["limit"] or None
        rows = self._rows(subscriptions, limit, now)
        more = limit is not None and len(rows) > limit
        rows = rows[:limit]
        if not rows:
            self.stderr.write("no subscriptions match")
            return
        self.stdout.write(_table(rows))
        if more:
            self.stderr.write(f"showing the first {limit}; more match (--limit 0 shows all)")

    def _filtered(self, options: dict[str, Any], now: datetime) -> QuerySet[Subscription]:
        topic_keys = None
        try:
            if options["topic"] is not None:
                topic_keys = [subscription_key(options["topic"])]
            if options["matching"] is not None:
                matching = publish_keys(options["matching"])
                topic_keys = matching if topic_keys is None else [key for key in topic_keys if key in matching]
        except InvalidTopic as exc:
            raise CommandError(f"invalid topic: {exc}") from None
        state = options["state"]
        return selectors.subscriptions_list(
            topic_keys=topic_keys,
            callback_contains=options["callback"],
            state=None if state in (None, "expired") else state,
            expired=True if state == "expired" else None,
            now=now,
        ).order_by("-id")

    def _rows(self, subscriptions: QuerySet[Subscription], limit: int | None, now: datetime) -> list[tuple[str, ...]]:
        """The table's rows, one more than limit to tell whether more match; a progress line on a terminal."""
        # Only whether a secret is set leaves the database, never the secret.
        has_secret = ExpressionWrapper(~Q(secret=""), output_field=BooleanField())
        fields = subscriptions.annotate(has_secret=has_secret).values_list(
            "id", "state", "topic", "callback", "expires_at", "has_secret"
        )
        if limit is not None:
            fields = fields[: limit + 1]
        progress = self.stderr.isatty()
        rows: list[tuple[str, ...]] = []
        for pk, state, topic, callback, expires_at, secret_set in fields.iterator(chunk_size=CHUNK):
            shown_state = "expired" if expires_at <= now else state
            rows.append((str(pk), shown_state, topic, callback, _utc(expires_at), "yes" if secret_set else "no"))
            if progress and len(rows) % PROGRESS_EVERY == 0:
                self.stderr.write(f"\rread {len(rows)} subscriptions", ending="")
        if progress and len(rows) >= PROGRESS_EVERY:
            self.stderr.write("\r" + " " * 40 + "\r", ending="")
        return rows


def _utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(COLUMNS)]
    lines = [COLUMNS, tuple("-" * width for width in widths), *rows]
    return "\n".join(_line(line, widths) for line in lines)


def _line(cells: tuple[str, ...], widths: list[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
