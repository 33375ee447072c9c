"""Subscribe and unsubscribe requests and their verification outcome (read-only)."""

from django.contrib import admin

from subscriptions.admin.base import ReadOnlyAdmin
from subscriptions.models import SubscriptionRequest


@admin.register(SubscriptionRequest)
class SubscriptionRequestAdmin(ReadOnlyAdmin):
    list_display = ["id", "mode", "topic", "callback", "state", "reason", "response_status", "created_at"]
    list_filter = ["state", "mode"]
    search_fields = ["topic", "callback"]
    exclude = ["secret"]
    readonly_fields = [
        "mode",
        "topic",
        "topic_key",
        "callback",
        "lease_seconds",
        "state",
        "reason",
        "response_status",
        "created_at",
        "completed_at",
    ]
