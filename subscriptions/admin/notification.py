"""Notifications: what was published, and its outcome per subscriber ("did message X reach Y, and why not")."""

from django.contrib import admin
from django.db.models import F, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from subscriptions import selectors
from subscriptions.admin.base import ReadOnlyAdmin
from subscriptions.admin.display import DELIVERY_TABLE_FIELDS, deliveries_table, delivery_list_url, shortened
from subscriptions.admin.filters import CreatedFilter, OutcomeFilter, TopicPrefixFilter
from subscriptions.models import Delivery, Notification

# Deliveries listed on a notification's page: a fan-out can reach every subscriber.
NOTIFICATION_DELIVERIES = 200
# Characters of a topic in the list.
LIST_COLUMN = 48
# The list's outcome column, worst first.
OUTCOME_LABELS = [
    (Delivery.Status.FAILED, "failed"),
    (Delivery.Status.PENDING, "pending"),
    (Delivery.Status.DELIVERED, "delivered"),
    (Delivery.Status.CANCELLED, "cancelled"),
]


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ["id", "topic_short", "content_type", "created_at", "spread_at", "outcome_summary"]
    list_filter = [OutcomeFilter, CreatedFilter, TopicPrefixFilter]
    search_fields = ["topic"]
    exclude = ["content"]
    fieldsets = [
        (None, {"fields": ["topic", "content_type", "content_preview", "created_at", "spread_at"]}),
        ("Deliveries per subscriber", {"fields": ["outcome", "deliveries"]}),
    ]
    readonly_fields = [field for _, options in fieldsets for field in options["fields"]]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # The content can be megabytes a row: the list never reads it, the change page reads it once.
        return super().get_queryset(request).defer("content")

    def get_changelist_instance(self, request: HttpRequest) -> object:
        """The list page, with each row's delivery counts read in one query for the whole page."""
        changelist = super().get_changelist_instance(request)
        rows = list(changelist.result_list)  # evaluated once: the template reuses these objects
        counts = selectors.notifications_delivery_counts(notification_ids=[row.pk for row in rows])
        for row in rows:
            row.list_counts = counts[row.pk]
        return changelist

    @admin.display(description="topic", ordering="topic")
    def topic_short(self, obj: Notification) -> SafeString | str:
        return shortened(obj.topic, LIST_COLUMN)

    @admin.display(description="outcome")
    def outcome_summary(self, obj: Notification) -> SafeString | str:
        counts = obj.list_counts
        parts = [
            (
                delivery_list_url(notification__id__exact=obj.pk, status__exact=status),
                status,
                counts[status],
                label,
            )
            for status, label in OUTCOME_LABELS
            if counts[status]
        ]
        if not parts:
            return "no deliveries" if obj.spread_at else "not spread yet"
        return format_html_join(
            " · ", '<a class="hub-outcome-{}" href="{}">{} {}</a>', ((s, u, n, lbl) for u, s, n, lbl in parts)
        )

    @admin.display(description="content (first 2,000 characters)")
    def content_preview(self, obj: Notification) -> str:
        return bytes(obj.content[:2000]).decode("utf-8", "replace")

    @admin.display(description="outcome")
    def outcome(self, obj: Notification) -> SafeString:
        counts = selectors.delivery_counts(notification_id=obj.pk)
        return format_html_join(
            ", ",
            '<a href="{}">{} {}</a>',
            (
                (delivery_list_url(notification__id__exact=obj.pk, status__exact=status), counts[status], label)
                for status, label in Delivery.Status.choices
            ),
        )

    @admin.display(description="deliveries per subscriber")
    def deliveries(self, obj: Notification) -> SafeString:
        rows = list(
            selectors.deliveries_list(notification_id=obj.pk)
            .order_by("id")
            .only(*DELIVERY_TABLE_FIELDS)
            .annotate(subscription_state=F("subscription__state"))[: NOTIFICATION_DELIVERIES + 1]
        )
        more = ""
        if len(rows) > NOTIFICATION_DELIVERIES:
            rows = rows[:NOTIFICATION_DELIVERIES]
            more = f"Only the first {NOTIFICATION_DELIVERIES} are shown. "
        return format_html(
            '{}<p>{}<a href="{}">All deliveries of this notification</a></p>',
            deliveries_table(rows, subscriber_column=True),
            more,
            delivery_list_url(notification__id__exact=obj.pk),
        )
