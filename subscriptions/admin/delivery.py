"""Deliveries: one notification owed to one subscriber, its attempt log, and the replay of failed ones."""

import uuid

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import F, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.safestring import SafeString

from subscriptions.admin.base import ReadOnlyAdmin
from subscriptions.admin.display import admin_link, can_retry_deliveries, delivery_status_label, shortened
from subscriptions.admin.filters import (
    AttemptedFilter,
    DeliveryStatusFilter,
    DeliveryTopicFilter,
    NotificationScopeFilter,
    StatusCodeFilter,
    SubscriptionScopeFilter,
)
from subscriptions.admin.replay import replay
from subscriptions.models import (
    ATTEMPT_FIELDS,
    DELIVERY_OUTCOME_FIELDS,
    Delivery,
    DeliveryAttempt,
    Notification,
    Subscription,
)

# Characters of a callback or an error in a list column.
LIST_COLUMN = 30


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    fields = ATTEMPT_FIELDS
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    # Columns that fit 1,400 px: URLs and errors shortened to one line (the full text is on the delivery's page).
    list_display = [
        "id",
        "notification_column",
        "subscription_column",
        "callback_short",
        "status_label",
        "tries",
        "code",
        "error_short",
        "last_attempt_at",
    ]
    list_filter = [
        DeliveryStatusFilter,
        StatusCodeFilter,
        AttemptedFilter,
        DeliveryTopicFilter,
        SubscriptionScopeFilter,
        NotificationScopeFilter,
    ]
    search_fields = ["callback"]
    readonly_fields = [
        "uuid",
        "notification_link",
        "subscription_link",
        "callback",
        "replay",
        "status_label",
        *DELIVERY_OUTCOME_FIELDS[1:],
        "due_at",
        "created_at",
        "updated_at",
    ]
    inlines = [DeliveryAttemptInline]
    actions = ["retry"]

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # The subscription's state rides along (one join, no query per row): "held" needs it.
        return super().get_queryset(request).annotate(subscription_state=F("subscription__state"))

    @admin.display(description="status", ordering="status")
    def status_label(self, obj: Delivery) -> SafeString:
        return delivery_status_label(obj.status, getattr(obj, "subscription_state", None))

    @admin.display(description="callback", ordering="callback")
    def callback_short(self, obj: Delivery) -> SafeString | str:
        return shortened(obj.callback, LIST_COLUMN)

    # Narrow headers for the list; the delivery's page keeps the full names.
    @admin.display(description="notif.", ordering="notification_id")
    def notification_column(self, obj: Delivery) -> SafeString | str:
        return admin_link(Notification, obj.notification_id)

    @admin.display(description="subscr.", ordering="subscription_id")
    def subscription_column(self, obj: Delivery) -> SafeString | str:
        return admin_link(Subscription, obj.subscription_id)

    @admin.display(description="tries", ordering="attempts")
    def tries(self, obj: Delivery) -> int:
        return obj.attempts

    @admin.display(description="code", ordering="last_status_code")
    def code(self, obj: Delivery) -> int | str:
        return obj.last_status_code or "—"

    @admin.display(description="last error")
    def error_short(self, obj: Delivery) -> SafeString | str:
        return shortened(obj.last_error, LIST_COLUMN)

    @admin.display(description="notification", ordering="notification_id")
    def notification_link(self, obj: Delivery) -> SafeString | str:
        # Built from the column alone: a join or a query per row would slow the list.
        return admin_link(Notification, obj.notification_id)

    @admin.display(description="subscription", ordering="subscription_id")
    def subscription_link(self, obj: Delivery) -> SafeString | str:
        return admin_link(Subscription, obj.subscription_id)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        # A subscriber quotes X-Hub-Delivery: look that up by its unique index, not by scanning callbacks.
        try:
            delivery_uuid = uuid.UUID(search_term.strip())
        except ValueError:
            return super().get_search_results(request, queryset, search_term)
        return queryset.filter(uuid=delivery_uuid), False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return can_retry_deliveries(request)

    @admin.action(description="Retry the selected failed deliveries", permissions=["retry"])
    def retry(self, request: HttpRequest, queryset: QuerySet) -> TemplateResponse | None:
        return replay(self, request, queryset, what="The selected deliveries")

    def get_urls(self) -> list[URLPattern]:
        extra = [
            path(
                "<path:object_id>/retry/",
                self.admin_site.admin_view(self.retry_view),
                name="subscriptions_delivery_retry",
            )
        ]
        return extra + super().get_urls()

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> object:
        context = {**(extra_context or {}), "can_retry": self.has_retry_permission(request)}
        return super().change_view(request, object_id, form_url, extra_context=context)

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The delivery page's Retry button: the list's retry of this one delivery, confirmation step included."""
        if request.method != "POST" or not self.has_retry_permission(request):
            raise PermissionDenied
        delivery = get_object_or_404(self.get_queryset(request), pk=object_id)
        response = replay(self, request, Delivery.objects.filter(pk=delivery.pk), what=f"Delivery #{delivery.pk}")
        return response or HttpResponseRedirect(reverse("admin:subscriptions_delivery_change", args=[delivery.pk]))
