"""The operators' view: subscriptions, verification requests, notifications and deliveries.

Secrets are never shown: the lists say only whether one is set.
"""

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from subscriptions import ratelimit, selectors, services
from subscriptions.models import Delivery, DeliveryAttempt, Notification, Subscription, SubscriptionRequest


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


class SubscriptionAdminForm(forms.ModelForm):
    class Meta:
        model = Subscription
        fields = ["rate_limit"]

    def clean_rate_limit(self) -> str:
        value = (self.cleaned_data.get("rate_limit") or "").strip()
        try:
            ratelimit.parse_rate(value)
        except ratelimit.InvalidRate as exc:
            raise forms.ValidationError(str(exc)) from None
        return value


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyAdmin):
    form = SubscriptionAdminForm
    list_display = ["id", "topic", "callback", "state", "has_secret", "consecutive_failures", "expires_at"]
    list_filter = ["state", ExpiryFilter]
    search_fields = ["topic", "callback"]
    exclude = ["secret"]
    fields = [
        "topic",
        "topic_key",
        "callback",
        "state",
        "pause_reason",
        "paused_at",
        "resume_after",
        "secret_set",
        "rate_limit",
        "lease_seconds",
        "verified_at",
        "expires_at",
        "figures",
        "consecutive_failures",
        "last_failure_at",
        "last_failure_reason",
        "created_at",
        "updated_at",
    ]
    readonly_fields = [f for f in fields if f != "rate_limit"]
    actions = ["retry_failed", "pause", "resume"]

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # Only the rate limit is editable; everything else comes from the subscriber.
        return True

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return True

    @admin.display(boolean=True, description="secret set")
    def has_secret(self, obj: Subscription) -> bool:
        return obj.has_secret

    @admin.display(boolean=True, description="secret set")
    def secret_set(self, obj: Subscription) -> bool:
        return obj.has_secret

    @admin.display(description="deliveries")
    def figures(self, obj: Subscription) -> str:
        figures = selectors.subscription_figures(subscription_id=obj.pk)
        last = figures["last_success_at"]
        return (
            f"{figures['delivered']} delivered, {figures['failed']} failed, {figures['pending']} pending; "
            f"last success: {last.isoformat(timespec='seconds') if last else 'never'}"
        )

    @admin.action(description="Retry the failed deliveries of the selected subscriptions")
    def retry_failed(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = services.deliveries_replay(Delivery.objects.filter(subscription__in=queryset))
        self.message_user(request, f"{count} failed deliveries sent again.", messages.SUCCESS)

    @admin.action(description="Pause the selected subscriptions")
    def pause(self, request: HttpRequest, queryset: QuerySet) -> None:
        for subscription in queryset:
            services.subscription_pause(subscription=subscription)
        self.message_user(request, f"{queryset.count()} subscriptions paused.", messages.SUCCESS)

    @admin.action(description="Resume the selected subscriptions (and send what waited)")
    def resume(self, request: HttpRequest, queryset: QuerySet) -> None:
        released = sum(services.subscription_resume(subscription=s) for s in queryset)
        self.message_user(request, f"Resumed; {released} waiting deliveries sent.", messages.SUCCESS)

    def save_model(self, request: HttpRequest, obj: Subscription, form: object, change: bool) -> None:
        services.subscription_set_rate_limit(subscription=obj, rate_limit=obj.rate_limit)


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


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    fields = ["number", "started_at", "duration_ms", "status_code", "error", "response_body"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


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
        "due_at",
        "created_at",
        "updated_at",
    ]
    inlines = [DeliveryAttemptInline]
    actions = ["retry"]
    # The list's count would scan the table; the paginator shows "more" instead.
    show_full_result_count = False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.action(description="Retry the selected failed deliveries")
    def retry(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = services.deliveries_replay(queryset)
        self.message_user(request, f"{count} failed deliveries sent again.", messages.SUCCESS)
