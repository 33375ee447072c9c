"""Cells and tables the hub's admin pages share: times, links to rows, delivery tables."""

import re
from collections.abc import Iterable
from datetime import datetime
from urllib.parse import urlencode

from django.contrib.auth import get_permission_codename
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from subscriptions.models import Delivery, Notification, Subscription

# Characters of an error message shown in a table cell.
ERROR_PREVIEW = 80
# Characters of an error or URL in a list column: one line at 1,400 px (the full text is in the cell's title).
LIST_PREVIEW = 48
_TAGS = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


def when(value: datetime | None) -> str:
    # Compact, sortable and unambiguous in a table cell.
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S") if value else "—"


def one_line(text: str) -> str:
    """Text for a table cell: tags stripped (raw HTML error bodies) and whitespace collapsed to one line."""
    return _SPACE.sub(" ", _TAGS.sub(" ", text or "")).strip()


def shortened(text: str, limit: int = LIST_PREVIEW) -> SafeString | str:
    """One line of at most `limit` characters; the whole one-line text shows on hover."""
    line = one_line(text)
    if not line:
        return "—"
    if len(line) <= limit:
        return line
    return format_html('<span title="{}">{}</span>', line, Truncator(line).chars(limit))


def delivery_status_label(status: str, subscription_state: str | None) -> SafeString:
    """The status as operators read it: a pending delivery of a paused subscription is held, not in flight."""
    if status == Delivery.Status.PENDING and subscription_state == Subscription.State.PAUSED:
        return format_html('<span class="hub-status hub-status-held">{}</span>', "Held (paused)")
    return format_html('<span class="hub-status hub-status-{}">{}</span>', status, Delivery.Status(status).label)


def admin_link(model: type, pk: int | None, text: str | None = None) -> SafeString | str:
    """A link to a row's change page, built from its id alone (no query)."""
    if pk is None:
        return "—"
    opts = model._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[pk])
    return format_html('<a href="{}">{}</a>', url, text or f"#{pk}")


def delivery_list_url(**filters: object) -> str:
    return f"{reverse('admin:subscriptions_delivery_changelist')}?{urlencode(filters)}"


def can_retry_deliveries(request: HttpRequest) -> bool:
    """Requeueing deliveries takes Django's change permission on Delivery; the delivery page itself stays read-only."""
    opts = Delivery._meta
    return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")


def deliveries_table(rows: Iterable[Delivery], *, subscriber_column: bool) -> SafeString:
    """An HTML table of deliveries for a change page, one row per delivery."""
    head = ["Delivery", "Subscription" if subscriber_column else "Notification", "Status"]
    head += ["Attempts", "Last status", "Last error", "Last attempt", "Delivered"]
    if subscriber_column:
        head.insert(1, "Callback")
    cells = []
    for row in rows:
        values: list[object] = [admin_link(Delivery, row.pk)]
        if subscriber_column:
            values += [row.callback, admin_link(Subscription, row.subscription_id)]
        else:
            values.append(admin_link(Notification, row.notification_id))
        values += [
            delivery_status_label(row.status, getattr(row, "subscription_state", None)),
            row.attempts,
            row.last_status_code or "—",
            shortened(row.last_error, ERROR_PREVIEW),
            when(row.last_attempt_at),
            when(row.delivered_at),
        ]
        cells.append(format_html_join("", "<td>{}</td>", ((value,) for value in values)))
    if not cells:
        return format_html("<p>{}</p>", "No deliveries yet.")
    return format_html(
        '<table class="hub-deliveries"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>',
        format_html_join("", "<th>{}</th>", ((title,) for title in head)),
        format_html_join("", '<tr class="delivery-{}">{}</tr>', zip([r.status for r in rows], cells, strict=True)),
    )


# Columns a delivery table reads: never the notification's content.
DELIVERY_TABLE_FIELDS = [
    "id",
    "notification_id",
    "subscription_id",
    "callback",
    "status",
    "attempts",
    "last_status_code",
    "last_error",
    "last_attempt_at",
    "delivered_at",
]
