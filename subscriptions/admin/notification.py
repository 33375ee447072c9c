"""Notifications: what was published, and its outcome per subscriber ("did message X reach Y, and why not")."""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from subscriptions import selectors
from subscriptions.admin.base import ReadOnlyAdmin
from subscriptions.admin.display import DELIVERY_TABLE_FIELDS, deliveries_table, delivery_list_url
from subscriptions.models import Delivery, Notification

# Deliveries listed on a notification's page: a fan-out can reach every subscriber.
NOTIFICATION_DELIVERIES = 200


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ["id", "topic", "content_type", "created_at", "spread_at"]
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
            .only(*DELIVERY_TABLE_FIELDS)[: NOTIFICATION_DELIVERIES + 1]
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
