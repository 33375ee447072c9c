"""Subscriptions: the list (which subscribers are failing now) and the change page (state, lease, figures, recent
deliveries, the editable rate limit). Pause, resume, retry, expire, replay and rotate: subscription_actions.py."""

from datetime import timedelta

from django import forms
from django.contrib import admin
from django.db.models import Value
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.timesince import timesince, timeuntil

from subscriptions import delivery, ratelimit, selectors, services
from subscriptions.admin.base import ReadOnlyAdmin
from subscriptions.admin.display import (
    DELIVERY_TABLE_FIELDS,
    deliveries_table,
    delivery_list_url,
    shortened,
    when,
)
from subscriptions.admin.filters import DeadLettersFilter, ExpiryFilter, SubscriptionTopicFilter
from subscriptions.admin.subscription_actions import SubscriptionActions
from subscriptions.models import Delivery, Subscription

# Deliveries listed on a subscription's page; the rest are one link away.
RECENT_DELIVERIES = 20
# The list's success rate looks this far back (seconds).
LIST_RATE_WINDOW_SECONDS = 3600
# Below this success rate (percent) the list shows the rate as bad.
ATTENTION_SUCCESS_RATE = 90
# Characters of a topic or callback, and of a failure reason, in a list column.
LIST_COLUMN = 32
LIST_REASON = 16


class SubscriptionAdminForm(forms.ModelForm):
    class Meta:
        model = Subscription
        fields = ["rate_limit", "standard_webhooks"]

    def clean_rate_limit(self) -> str:
        value = (self.cleaned_data.get("rate_limit") or "").strip()
        try:
            ratelimit.parse_rate(value)
        except ratelimit.InvalidRate as exc:
            raise forms.ValidationError(str(exc)) from None
        return value


@admin.register(Subscription)
class SubscriptionAdmin(SubscriptionActions, ReadOnlyAdmin):
    form = SubscriptionAdminForm
    # The columns answer "which subscribers are failing right now?" and fit 1,400 px.
    list_display = [
        "id",
        "topic_short",
        "callback_short",
        "state_label",
        "dead_letters",
        "success_last_hour",
        "last_failure_short",
        "lease_left",
    ]
    list_filter = ["state", DeadLettersFilter, ExpiryFilter, SubscriptionTopicFilter]
    search_fields = ["topic", "callback"]
    exclude = ["secret", "previous_secret"]
    fieldsets = [
        (None, {"fields": ["topic", "topic_key", "callback", "created_at", "updated_at"]}),
        (
            "State and lease",
            {
                "fields": [
                    "state",
                    "pause_reason",
                    "paused_at",
                    "resume_after",
                    "lease_remaining",
                    "expires_at",
                    "lease_seconds",
                    "verified_at",
                ]
            },
        ),
        (
            "Delivery",
            {
                "fields": [
                    "secret_set",
                    "secret_rotation",
                    "rate_limit",
                    "standard_webhooks",
                    "figures",
                    "last_success",
                    "last_failure",
                    "consecutive_failures",
                ]
            },
        ),
        ("Recent deliveries", {"fields": ["recent_deliveries"]}),
    ]
    readonly_fields = [
        field
        for _, options in fieldsets
        for field in options["fields"]
        if field not in ("rate_limit", "standard_webhooks")
    ]

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # Only the rate limit is editable (everything else comes from the subscriber), and the actions need it.
        return admin.ModelAdmin.has_change_permission(self, request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return admin.ModelAdmin.has_delete_permission(self, request, obj)

    @staticmethod
    def _figures(obj: Subscription) -> dict[str, object]:
        # Several fields read the same figures: one pair of queries per page.
        if not hasattr(obj, "_admin_figures"):
            obj._admin_figures = selectors.subscription_figures(subscription_id=obj.pk)
        return obj._admin_figures

    def get_changelist_instance(self, request: HttpRequest) -> object:
        """The list page, with each row's figures read in one query for the whole page."""
        changelist = super().get_changelist_instance(request)
        rows = list(changelist.result_list)  # evaluated once: the template reuses these objects
        since = timezone.now() - timedelta(seconds=LIST_RATE_WINDOW_SECONDS)
        figures = selectors.subscriptions_recent_figures(subscription_ids=[row.pk for row in rows], since=since)
        for row in rows:
            row.list_figures = figures[row.pk]
        return changelist

    @admin.display(description="topic", ordering="topic")
    def topic_short(self, obj: Subscription) -> SafeString | str:
        return shortened(obj.topic, LIST_COLUMN)

    @admin.display(description="callback", ordering="callback")
    def callback_short(self, obj: Subscription) -> SafeString | str:
        return shortened(obj.callback, LIST_COLUMN)

    @admin.display(description="state", ordering="state")
    def state_label(self, obj: Subscription) -> SafeString:
        if obj.expires_at <= timezone.now():
            return format_html('<span class="hub-status hub-status-expired">{}</span>', "Expired")
        return format_html('<span class="hub-status hub-status-{}">{}</span>', obj.state, obj.get_state_display())

    @admin.display(description="dead letters")
    def dead_letters(self, obj: Subscription) -> SafeString | int:
        failed = obj.list_figures["failed"]
        if not failed:
            return 0
        url = delivery_list_url(subscription__id__exact=obj.pk, status__exact=Delivery.Status.FAILED)
        return format_html('<a class="hub-dead-letters" href="{}">{}</a>', url, failed)

    @admin.display(description="success (1 h)")
    def success_last_hour(self, obj: Subscription) -> SafeString | str:
        succeeded, failing = obj.list_figures["succeeded"], obj.list_figures["failing"]
        attempted = succeeded + failing
        if not attempted:
            return "—"
        rate = 100 * succeeded / attempted
        level = "bad" if rate < ATTENTION_SUCCESS_RATE else "good"
        title = f"{succeeded} of {attempted} deliveries attempted in the last hour succeeded"
        return format_html(
            '<span class="hub-rate-{}" title="{}">{}% of {}</span>', level, title, f"{rate:.0f}", attempted
        )

    @admin.display(description="last failure", ordering="last_failure_at")
    def last_failure_short(self, obj: Subscription) -> SafeString | str:
        if obj.last_failure_at is None:
            return "—"
        return format_html("{} {}", when(obj.last_failure_at), shortened(obj.last_failure_reason, LIST_REASON))

    @admin.display(description="lease", ordering="expires_at")
    def lease_left(self, obj: Subscription) -> str:
        now = timezone.now()
        if obj.expires_at <= now:
            return f"ended {timesince(obj.expires_at, now, depth=1)} ago"
        return timeuntil(obj.expires_at, now, depth=1)

    @admin.display(boolean=True, description="secret set")
    def secret_set(self, obj: Subscription) -> bool:
        return obj.has_secret

    @admin.display(description="secret rotation")
    def secret_rotation(self, obj: Subscription) -> str:
        ends = obj.previous_secret_expires_at
        if not delivery.secret_in_grace(obj.previous_secret, ends, now=timezone.now()):
            return "—"
        return f"the previous secret also signs webhook-signature until {when(ends)} ({timeuntil(ends)} left)"

    @admin.display(description="lease remaining", ordering="expires_at")
    def lease_remaining(self, obj: Subscription) -> str:
        now = timezone.now()
        if obj.expires_at <= now:
            return f"expired {timesince(obj.expires_at, now)} ago (awaiting removal)"
        return timeuntil(obj.expires_at, now)

    @admin.display(description="deliveries")
    def figures(self, obj: Subscription) -> SafeString:
        figures = self._figures(obj)
        return format_html(
            '{} delivered, <a href="{}">{} failed</a>, {} pending',
            figures["delivered"],
            delivery_list_url(subscription__id__exact=obj.pk, status__exact=Delivery.Status.FAILED),
            figures["failed"],
            figures["pending"],
        )

    @admin.display(description="last success")
    def last_success(self, obj: Subscription) -> str:
        last = self._figures(obj)["last_success_at"]
        return when(last) if last else "never"

    @admin.display(description="last failure")
    def last_failure(self, obj: Subscription) -> str:
        if obj.last_failure_at is None:
            return "never"
        return f"{when(obj.last_failure_at)}: {obj.last_failure_reason or 'no reason recorded'}"

    @admin.display(description="recent deliveries")
    def recent_deliveries(self, obj: Subscription) -> SafeString:
        rows = list(
            selectors.deliveries_list(subscription_id=obj.pk)
            .order_by("-id")
            .only(*DELIVERY_TABLE_FIELDS)
            .annotate(subscription_state=Value(obj.state))[:RECENT_DELIVERIES]
        )
        return format_html(
            '{}<p><a href="{}">All deliveries of this subscription</a></p>',
            deliveries_table(rows, subscriber_column=False),
            delivery_list_url(subscription__id__exact=obj.pk),
        )

    def save_model(self, request: HttpRequest, obj: Subscription, form: object, change: bool) -> None:
        services.subscription_update(
            subscription=obj, rate_limit=obj.rate_limit, standard_webhooks=obj.standard_webhooks
        )
