"""The operators' view: subscriptions, verification requests, notifications and deliveries.

Secrets are never shown: the lists say only whether one is set.
"""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from subscriptions.models import Delivery, Notification, Subscription, SubscriptionRequest


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records the hub writes itself: operators look, they do not edit."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ExpiryFilter(admin.SimpleListFilter):
    title = "lease"
    parameter_name = "lease"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("live", "Live"), ("expired", "Expired (awaiting removal)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "live":
            return queryset.filter(expires_at__gt=timezone.now())
        if self.value() == "expired":
            return queryset.filter(expires_at__lte=timezone.now())
        return queryset


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyAdmin):
    list_display = ["id", "topic", "callback", "state", "has_secret", "expires_at", "verified_at"]
    list_filter = ["state", ExpiryFilter]
    search_fields = ["topic", "callback"]
    exclude = ["secret"]
    readonly_fields = [
        "topic",
        "topic_key",
        "callback",
        "state",
        "secret_set",
        "lease_seconds",
        "verified_at",
        "expires_at",
        "created_at",
        "updated_at",
    ]

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return True

    @admin.display(boolean=True, description="secret set")
    def has_secret(self, obj: Subscription) -> bool:
        return obj.has_secret

    @admin.display(boolean=True, description="secret set")
    def secret_set(self, obj: Subscription) -> bool:
        return obj.has_secret


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


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ["id", "topic", "content_type", "created_at", "spread_at"]
    search_fields = ["topic"]
    exclude = ["content"]
    readonly_fields = ["topic", "content_type", "content_preview", "created_at", "spread_at"]

    @admin.display(description="content (first 2,000 characters)")
    def content_preview(self, obj: Notification) -> str:
        return bytes(obj.content[:2000]).decode("utf-8", "replace")


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "notification_id",
        "callback",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "last_attempt_at",
        "delivered_at",
    ]
    list_filter = ["status"]
    search_fields = ["callback"]
    raw_id_fields = ["notification", "subscription"]
    readonly_fields = [
        "uuid",
        "notification",
        "subscription",
        "callback",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "last_attempt_at",
        "delivered_at",
        "created_at",
        "updated_at",
    ]
    list_select_related = False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
