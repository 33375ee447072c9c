"""The admin's front page: the hub's health at a glance.

Deliveries per minute by outcome over the last 24 hours (an inline SVG chart
drawn here, no script and no CDN), the queue depths (the broker's queues and the
database's pending deliveries), and the subscriptions that need attention now
with their last error and links to act. Every figure comes from a bounded query:
the chart and the attention list read the last-attempt index by time range, the
pending figures the partial index of pending deliveries (see
tests/unit/test_admin_dashboard.py, which checks the plans at 1,000,000 deliveries).
"""

import logging
from collections import defaultdict
from datetime import datetime, timedelta

from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from subscriptions import selectors
from subscriptions.admin.display import admin_link, delivery_list_url, shortened, when
from subscriptions.models import Delivery, Subscription
from websubhub.hub_settings import hub_settings
from websubhub.queues import ALL_QUEUES

logger = logging.getLogger(__name__)

CHART_MINUTES = 24 * 60
CHART_HEIGHT = 160
# Hours between the chart's time labels.
CHART_LABEL_HOURS = 3
# Bottom to top in each minute's bar, with their colours.
CHART_SERIES = [("delivered", "#2a7d2a"), ("retrying", "#e08a00"), ("failed", "#ba2121")]
# The attention list: its window (seconds) and its most rows.
ATTENTION_WINDOW_SECONDS = 3600
ATTENTION_ROWS = 50
# Characters of a callback, topic or error in the attention table.
ATTENTION_COLUMN = 36


def dashboard_context(request: HttpRequest) -> dict[str, object]:
    """Everything the dashboard shows (six queries, and one broker connection for the queue depths)."""
    now = timezone.now()
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=CHART_MINUTES - 1)
    per_minute = selectors.deliveries_per_minute(since=start)
    attention = selectors.subscriptions_needing_attention(
        since=now - timedelta(seconds=ATTENTION_WINDOW_SECONDS),
        failure_rate=hub_settings.HUB_ADMIN_ATTENTION_FAILURE_RATE / 100,
        limit=ATTENTION_ROWS,
    )
    totals = dict.fromkeys((name for name, _ in CHART_SERIES), 0)
    for row in per_minute:
        totals[row.outcome] += row.count
    return {
        "chart": chart_svg(per_minute, start=start),
        "chart_labels": chart_labels(start),
        "chart_series": CHART_SERIES,
        "chart_totals": totals,
        "chart_start": when(start),
        "pending": selectors.pending_depths(now=now),
        **_broker_depths(),
        "attention": attention,
        "attention_table": attention_table(attention.rows),
        "attention_limited": len(attention.rows) >= ATTENTION_ROWS,
        "attention_rate": hub_settings.HUB_ADMIN_ATTENTION_FAILURE_RATE,
        "failed_list_url": delivery_list_url(status__exact=Delivery.Status.FAILED),
        "held_list_url": delivery_list_url(status__exact="held"),
        "now": when(now),
        "time_zone": timezone.get_current_timezone_name(),
    }


def _broker_depths() -> dict[str, object]:
    """Each broker queue's depth, or why they cannot be read (the page still renders)."""
    from subscriptions.metrics.collectors import queue_depths

    try:
        return {"broker_queues": sorted(queue_depths(ALL_QUEUES).items()), "broker_error": ""}
    except Exception as exc:  # noqa: BLE001 - a dashboard without queue depths beats no dashboard
        logger.warning("dashboard: queue depths unavailable: %s: %s", type(exc).__name__, exc)
        return {"broker_queues": [], "broker_error": f"The broker cannot be reached ({type(exc).__name__})."}


def chart_svg(per_minute: list[selectors.MinuteCount], *, start: datetime) -> SafeString:
    """Stacked bars, one a minute from `start`: delivered, retrying, failed. Each minute's bar has a tooltip."""
    minutes: dict[int, dict[str, int]] = defaultdict(lambda: dict.fromkeys((name for name, _ in CHART_SERIES), 0))
    for row in per_minute:
        index = int((row.minute - start).total_seconds() // 60)
        if 0 <= index < CHART_MINUTES:
            minutes[index][row.outcome] += row.count
    peak = max((sum(counts.values()) for counts in minutes.values()), default=0) or 1
    scale = CHART_HEIGHT / peak
    bars = []
    for index in sorted(minutes):
        counts = minutes[index]
        at = timezone.localtime(start + timedelta(minutes=index)).strftime("%H:%M")
        tip = f"{at}: " + ", ".join(f"{counts[name]} {name}" for name, _ in CHART_SERIES if counts[name])
        base = CHART_HEIGHT
        rects = []
        for name, colour in CHART_SERIES:
            height = counts[name] * scale
            if height:
                base -= height
                rects.append((index, f"{base:.2f}", f"{height:.2f}", colour, name))
        bars.append(
            format_html(
                "<g><title>{}</title>{}</g>",
                tip,
                format_html_join(
                    "", '<rect x="{}" y="{}" width="1" height="{}" fill="{}" class="bar-{}"></rect>', rects
                ),
            )
        )
    grid = format_html_join(
        "",
        '<line x1="{}" y1="0" x2="{}" y2="{}" stroke="#ccc" stroke-width="0.5"></line>',
        ((x, x, CHART_HEIGHT) for x in range(0, CHART_MINUTES + 1, CHART_LABEL_HOURS * 60)),
    )
    return format_html(
        '<svg class="hub-chart" viewBox="0 0 {} {}" preserveAspectRatio="none" role="img" '
        'aria-label="Deliveries per minute by outcome, last 24 hours; peak {} a minute">{}{}</svg>',
        CHART_MINUTES,
        CHART_HEIGHT,
        peak,
        grid,
        SafeString("".join(bars)),
    )


def chart_labels(start: datetime) -> list[tuple[float, str]]:
    """(left in percent, local time) for the chart's time axis."""
    return [
        (100 * minute / CHART_MINUTES, timezone.localtime(start + timedelta(minutes=minute)).strftime("%H:%M"))
        for minute in range(0, CHART_MINUTES, CHART_LABEL_HOURS * 60)
    ]


def attention_table(rows: list[selectors.Attention]) -> SafeString:
    """The subscriptions that need attention, each with what is wrong and links to act."""
    if not rows:
        return format_html(
            '<p class="hub-all-well">{}</p>', "No subscription needs attention: none is paused or failing."
        )
    head = ["Subscription", "Callback", "Topic", "State", "Last hour", "Last error", "Act"]
    body = []
    for row in rows:
        subscription = row.subscription
        paused = subscription.state == Subscription.State.PAUSED
        attempted = row.succeeded + row.failing
        hour = f"{row.failing} of {attempted} failing" if attempted else "no deliveries"
        if row.failed:
            hour += f", {row.failed} dead letters"
        error = "—"
        if subscription.last_failure_at:
            error = format_html(
                "{} {}", when(subscription.last_failure_at), shortened(subscription.last_failure_reason, 60)
            )
        acts = format_html(
            '<a href="{}">{}</a> · <a href="{}">dead letters</a>',
            reverse("admin:subscriptions_subscription_change", args=[subscription.pk]),
            "resume or retry" if paused else "open",
            delivery_list_url(subscription__id__exact=subscription.pk, status__exact=Delivery.Status.FAILED),
        )
        state = format_html(
            '<span class="hub-status hub-status-{}">{}</span>', subscription.state, subscription.get_state_display()
        )
        cells = [
            admin_link(Subscription, subscription.pk),
            shortened(subscription.callback, ATTENTION_COLUMN),
            shortened(subscription.topic, ATTENTION_COLUMN),
            state,
            hour,
            error,
            acts,
        ]
        body.append(format_html_join("", "<td>{}</td>", ((cell,) for cell in cells)))
    return format_html(
        '<table class="hub-attention"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>',
        format_html_join("", "<th>{}</th>", ((title,) for title in head)),
        format_html_join(
            "", '<tr class="attention-{}">{}</tr>', zip([r.subscription.pk for r in rows], body, strict=True)
        ),
    )
