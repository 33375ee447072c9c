"""Subscriptions: state, lease, figures and recent deliveries; pause, resume, retry and expire, as list actions
and as buttons on the change page."""

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet, Value
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.timesince import timesince, timeuntil

from subscriptions import delivery, ratelimit, rules, selectors, services
from subscriptions.admin.base import ReadOnlyAdmin
from subscriptions.admin.display import (
    DELIVERY_TABLE_FIELDS,
    can_retry_deliveries,
    deliveries_table,
    delivery_list_url,
    shortened,
    when,
)
from subscriptions.admin.filters import DeadLettersFilter, ExpiryFilter, SubscriptionTopicFilter
from subscriptions.admin.replay import replay
from subscriptions.api.errors import hub_error_for_api
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


class ReplayForm(forms.Form):
    """The subscription page's replay by time window (POST /api/subscriptions/<id>/replay)."""

    since = forms.DateTimeField(help_text="published at or after, e.g. 2026-11-28 10:00 (UTC)")
    until = forms.DateTimeField(required=False, help_text="published before; empty: now")
    status = forms.MultipleChoiceField(
        choices=[(status, label) for status, label in Delivery.Status.choices if status != Delivery.Status.PENDING],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="whose delivery to this subscription ended so; none ticked: all three",
    )


class RotateSecretForm(forms.Form):
    """The subscription page's secret rotation (POST /api/subscriptions/<id>/rotate-secret)."""

    # Never rendered back into the page: the admin shows no secret but one the hub just made.
    secret = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="the new secret, fewer than 200 bytes; empty: the hub makes a random one and shows it once",
    )
    grace_seconds = forms.IntegerField(
        initial=rules.ROTATION_GRACE_SECONDS_DEFAULT,
        min_value=0,
        max_value=rules.ROTATION_GRACE_SECONDS_MAX,
        error_messages={"min_value": rules.ROTATION_GRACE_REFUSAL, "max_value": rules.ROTATION_GRACE_REFUSAL},
        help_text="how long the old secret still signs webhook-signature beside the new one (86400: a day)",
    )


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyAdmin):
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
    actions = ["retry_failed", "pause", "resume", "expire_now", "erase_history"]
    # The actions the change page offers as buttons (the same methods as the list's actions).
    object_actions = {
        "retry_failed": "Retry failed deliveries",
        "pause": "Pause",
        "resume": "Resume",
        "expire_now": "Expire now",
        "erase_history": "Erase with its history",
    }

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # Only the rate limit is editable (everything else comes from the subscriber), and the actions need it.
        return admin.ModelAdmin.has_change_permission(self, request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return admin.ModelAdmin.has_delete_permission(self, request, obj)

    def get_urls(self) -> list[URLPattern]:
        extra = [
            path(
                "<path:object_id>/replay/",
                self.admin_site.admin_view(self.replay_view),
                name="subscriptions_subscription_replay",
            ),
            path(
                "<path:object_id>/rotate-secret/",
                self.admin_site.admin_view(self.rotate_secret_view),
                name="subscriptions_subscription_rotate_secret",
            ),
            path(
                "<path:object_id>/act/<str:action>/",
                self.admin_site.admin_view(self.object_action_view),
                name="subscriptions_subscription_act",
            ),
        ]
        return extra + super().get_urls()

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> object:
        allowed = self.get_actions(request)
        buttons = {name: label for name, label in self.object_actions.items() if name in allowed}
        context = {
            **(extra_context or {}),
            "object_actions": buttons,
            "can_replay": self.has_retry_failed_permission(request),
            "can_rotate_secret": self.has_change_permission(request),
        }
        return super().change_view(request, object_id, form_url, extra_context=context)

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

    def has_retry_failed_permission(self, request: HttpRequest) -> bool:
        # It requeues the subscriptions' deliveries, so it takes what the delivery list's retry takes as well.
        return self.has_change_permission(request) and can_retry_deliveries(request)

    @admin.action(description="Retry the failed deliveries of the selected subscriptions", permissions=["retry_failed"])
    def retry_failed(self, request: HttpRequest, queryset: QuerySet) -> TemplateResponse | None:
        deliveries = selectors.deliveries_failed(subscriptions=queryset)
        return replay(self, request, deliveries, what="The failed deliveries of the selected subscriptions")

    @admin.action(description="Pause the selected subscriptions", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = 0
        for subscription in queryset:
            services.subscription_pause(subscription=subscription)
            count += 1
        self.message_user(request, f"{count} subscriptions paused.", messages.SUCCESS)

    @admin.action(description="Resume the selected subscriptions (and send what waited)", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet) -> None:
        released = sum(services.subscription_resume(subscription=s) for s in queryset)
        self.message_user(request, f"Resumed; {released} waiting deliveries sent.", messages.SUCCESS)

    @admin.action(description="Expire the selected subscriptions now", permissions=["change"])
    def expire_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = services.subscriptions_expire_now(subscriptions=queryset)
        self.message_user(
            request, f"{count} subscriptions expired; the next expiry run removes them.", messages.SUCCESS
        )

    @admin.action(
        description="Erase the selected subscriptions with every delivery and attempt they had",
        permissions=["delete"],
    )
    def erase_history(self, request: HttpRequest, queryset: QuerySet) -> None:
        erased = [services.subscription_erase(subscription=subscription) for subscription in queryset]
        deliveries = sum(counts.deliveries for counts in erased)
        attempts = sum(counts.attempts for counts in erased)
        self.message_user(
            request,
            f"{len(erased)} subscriptions erased with {deliveries} deliveries and {attempts} attempts.",
            messages.SUCCESS,
        )

    def replay_view(self, request: HttpRequest, object_id: str) -> object:
        """Replay by time window from the subscription's page: a form, then services.subscription_replay."""
        if not self.has_retry_failed_permission(request):
            raise PermissionDenied
        subscription = get_object_or_404(self.get_queryset(request), pk=object_id)
        form = ReplayForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                count = services.subscription_replay(
                    subscription=subscription,
                    since=form.cleaned_data["since"],
                    until=form.cleaned_data["until"],
                    statuses=form.cleaned_data["status"] or None,
                )
            except services.HubError as exc:
                form.add_error(exc.field if exc.field in form.fields else None, exc.message)
            else:
                self.message_user(request, f"{count} notifications sent again as new deliveries.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:subscriptions_subscription_change", args=[subscription.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": subscription,
            "title": f"Replay deliveries to {subscription}",
            "form": form,
        }
        return TemplateResponse(request, "admin/subscriptions/subscription/replay.html", context)

    def rotate_secret_view(self, request: HttpRequest, object_id: str) -> object:
        """Rotate the secret from the subscription's page: a form, then services.subscription_rotate_secret;
        a secret the hub made is shown on the answer's page, this once."""
        subscription = get_object_or_404(self.get_queryset(request), pk=object_id)
        if not self.has_change_permission(request, subscription):
            raise PermissionDenied
        form = RotateSecretForm(request.POST or None)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": subscription,
            "title": f"Rotate the secret of {subscription}",
            "form": form,
        }
        if request.method == "POST" and form.is_valid():
            try:
                rotation = services.subscription_rotate_secret(
                    subscription=subscription,
                    secret=form.cleaned_data["secret"] or None,
                    grace_seconds=form.cleaned_data["grace_seconds"],
                )
            except services.HubError as exc:
                # Named as the API names it (`secret`, not the /hub form's `hub.secret`), as this form does.
                field, message = hub_error_for_api(exc)
                form.add_error(field if field in form.fields else None, message)
            else:
                ends = rotation.previous_secret_expires_at
                overlap = f"; the old one also signs until {when(ends)}" if ends else ""
                if not rotation.generated:
                    self.message_user(request, f"Secret rotated{overlap}.", messages.SUCCESS)
                    return HttpResponseRedirect(
                        reverse("admin:subscriptions_subscription_change", args=[subscription.pk])
                    )
                context.update(rotation=rotation, overlap=overlap)
                # admin_view's never_cache keeps this page, the one that shows a secret, out of every cache.
                return TemplateResponse(request, "admin/subscriptions/subscription/rotate_secret.html", context)
        return TemplateResponse(request, "admin/subscriptions/subscription/rotate_secret.html", context)

    def object_action_view(self, request: HttpRequest, object_id: str, action: str) -> HttpResponse:
        """One of the list's actions applied to one subscription, from a button on its change page."""
        # Only an action the list would offer this user: get_actions applies each action's `permissions`.
        if request.method != "POST" or action not in self.object_actions or action not in self.get_actions(request):
            raise PermissionDenied
        subscription = get_object_or_404(self.get_queryset(request), pk=object_id)
        if not self.has_change_permission(request, subscription):
            raise PermissionDenied
        # An action may answer with a page of its own (the replay's confirmation step).
        response = getattr(self, action)(request, Subscription.objects.filter(pk=subscription.pk))
        if action == "erase_history":
            return HttpResponseRedirect(reverse("admin:subscriptions_subscription_changelist"))
        return response or HttpResponseRedirect(
            reverse("admin:subscriptions_subscription_change", args=[subscription.pk])
        )

    def save_model(self, request: HttpRequest, obj: Subscription, form: object, change: bool) -> None:
        services.subscription_update(
            subscription=obj, rate_limit=obj.rate_limit, standard_webhooks=obj.standard_webhooks
        )
