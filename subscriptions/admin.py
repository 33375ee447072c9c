"""The operators' view: subscriptions, verification requests, notifications and deliveries.

It answers "did my subscriber get it, and if not, why?": a subscription's page
shows its state, lease, figures and recent deliveries, a notification's page its
outcome per subscriber. Secrets are never shown: the pages say only whether one
is set. The lists stay fast on large tables: no COUNT(*) over a whole table
(PostgreSQL's estimate instead), no facet counts, no per-row queries.
"""

import uuid
from collections.abc import Iterable
from datetime import datetime
from urllib.parse import urlencode

from axes import admin as axes_admin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import Truncator
from django.utils.timesince import timesince, timeuntil

from subscriptions import ratelimit, selectors, services
from subscriptions.models import (
    ATTEMPT_FIELDS,
    DELIVERY_OUTCOME_FIELDS,
    Delivery,
    DeliveryAttempt,
    Notification,
    Subscription,
    SubscriptionRequest,
)

# Below this many rows (by the planner's estimate) an exact COUNT(*) is cheap, so
# small tables, and tests, show exact figures.
EXACT_COUNT_BELOW = 10_000
# Deliveries listed on a subscription's page; the rest are one link away.
RECENT_DELIVERIES = 20
# Deliveries listed on a notification's page: a fan-out can reach every subscriber.
NOTIFICATION_DELIVERIES = 200
# Characters of an error message shown in a table cell.
ERROR_PREVIEW = 80


class EstimatedCountPaginator(Paginator):
    """A paginator that counts an unfiltered PostgreSQL table from its statistics instead of COUNT(*).

    COUNT(*) reads the whole table (seconds at a million deliveries), and the
    admin runs it on every list page. The planner's estimate, from the statistics
    autovacuum's ANALYZE keeps, is a good enough total for a paginator. A filtered
    or searched list, a small table, and SQLite get the exact count.
    """

    estimated = False

    @cached_property
    def count(self) -> int:
        estimate = self._estimate()
        if estimate is None:
            return super().count
        self.estimated = True
        return estimate

    def _estimate(self) -> int | None:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return None
        query = queryset.query
        if query.where or query.distinct or query.combinator or query.is_sliced:
            return None
        estimate = selectors.estimated_rows(queryset.order_by())
        if estimate is None or estimate < EXACT_COUNT_BELOW:
            return None
        return estimate


class LargeListAdmin(admin.ModelAdmin):
    """Lists over tables that grow to millions of rows: estimated totals, no facet counts."""

    paginator = EstimatedCountPaginator
    # The "N total" beside a filtered count would be a second COUNT(*) over the whole table.
    show_full_result_count = False
    # Facets run one COUNT per filter choice over the filtered table.
    show_facets = admin.ShowFacets.NEVER


class ReadOnlyAdmin(LargeListAdmin):
    """Records the hub writes itself: operators look, they do not edit."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


def _when(value: datetime | None) -> str:
    # Compact, sortable and unambiguous in a table cell.
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S") if value else "—"


def _admin_link(model: type, pk: int | None, text: str | None = None) -> SafeString | str:
    """A link to a row's change page, built from its id alone (no query)."""
    if pk is None:
        return "—"
    opts = model._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[pk])
    return format_html('<a href="{}">{}</a>', url, text or f"#{pk}")


def _delivery_list_url(**filters: object) -> str:
    return f"{reverse('admin:subscriptions_delivery_changelist')}?{urlencode(filters)}"


def can_retry_deliveries(request: HttpRequest) -> bool:
    """Requeueing deliveries takes Django's change permission on Delivery; the delivery page itself stays read-only."""
    opts = Delivery._meta
    return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")


def _deliveries_table(rows: Iterable[Delivery], *, subscriber_column: bool) -> SafeString:
    """An HTML table of deliveries for a change page, one row per delivery."""
    head = ["Delivery", "Subscription" if subscriber_column else "Notification", "Status"]
    head += ["Attempts", "Last status", "Last error", "Last attempt", "Delivered"]
    if subscriber_column:
        head.insert(1, "Callback")
    cells = []
    for row in rows:
        values: list[object] = [_admin_link(Delivery, row.pk)]
        if subscriber_column:
            values += [row.callback, _admin_link(Subscription, row.subscription_id)]
        else:
            values.append(_admin_link(Notification, row.notification_id))
        values += [
            row.get_status_display(),
            row.attempts,
            row.last_status_code or "—",
            Truncator(row.last_error).chars(ERROR_PREVIEW) or "—",
            _when(row.last_attempt_at),
            _when(row.delivered_at),
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


class ExpiryFilter(admin.SimpleListFilter):
    title = "lease"
    parameter_name = "lease"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("live", "Live"), ("expired", "Expired (awaiting removal)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in ("live", "expired"):
            return selectors.subscriptions_list(among=queryset, expired=self.value() == "expired")
        return queryset


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


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyAdmin):
    form = SubscriptionAdminForm
    list_display = ["id", "topic", "callback", "state", "has_secret", "consecutive_failures", "lease_remaining"]
    list_filter = ["state", ExpiryFilter]
    search_fields = ["topic", "callback"]
    exclude = ["secret"]
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
        }
        return super().change_view(request, object_id, form_url, extra_context=context)

    @staticmethod
    def _figures(obj: Subscription) -> dict[str, object]:
        # Several fields read the same figures: one pair of queries per page.
        if not hasattr(obj, "_admin_figures"):
            obj._admin_figures = selectors.subscription_figures(subscription_id=obj.pk)
        return obj._admin_figures

    @admin.display(boolean=True, description="secret set")
    def has_secret(self, obj: Subscription) -> bool:
        return obj.has_secret

    @admin.display(boolean=True, description="secret set")
    def secret_set(self, obj: Subscription) -> bool:
        return obj.has_secret

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
            _delivery_list_url(subscription__id__exact=obj.pk, status__exact=Delivery.Status.FAILED),
            figures["failed"],
            figures["pending"],
        )

    @admin.display(description="last success")
    def last_success(self, obj: Subscription) -> str:
        last = self._figures(obj)["last_success_at"]
        return _when(last) if last else "never"

    @admin.display(description="last failure")
    def last_failure(self, obj: Subscription) -> str:
        if obj.last_failure_at is None:
            return "never"
        return f"{_when(obj.last_failure_at)}: {obj.last_failure_reason or 'no reason recorded'}"

    @admin.display(description="recent deliveries")
    def recent_deliveries(self, obj: Subscription) -> SafeString:
        rows = list(
            selectors.deliveries_list(subscription_id=obj.pk)
            .order_by("-id")
            .only(*DELIVERY_TABLE_FIELDS)[:RECENT_DELIVERIES]
        )
        return format_html(
            '{}<p><a href="{}">All deliveries of this subscription</a></p>',
            _deliveries_table(rows, subscriber_column=False),
            _delivery_list_url(subscription__id__exact=obj.pk),
        )

    def has_retry_failed_permission(self, request: HttpRequest) -> bool:
        # It requeues the subscriptions' deliveries, so it takes what the delivery list's retry takes as well.
        return self.has_change_permission(request) and can_retry_deliveries(request)

    @admin.action(description="Retry the failed deliveries of the selected subscriptions", permissions=["retry_failed"])
    def retry_failed(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = services.deliveries_replay(selectors.deliveries_failed(subscriptions=queryset))
        self.message_user(request, f"{count} failed deliveries sent again.", messages.SUCCESS)

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

    def object_action_view(self, request: HttpRequest, object_id: str, action: str) -> HttpResponseRedirect:
        """One of the list's actions applied to one subscription, from a button on its change page."""
        # Only an action the list would offer this user: get_actions applies each action's `permissions`.
        if request.method != "POST" or action not in self.object_actions or action not in self.get_actions(request):
            raise PermissionDenied
        subscription = get_object_or_404(self.get_queryset(request), pk=object_id)
        if not self.has_change_permission(request, subscription):
            raise PermissionDenied
        getattr(self, action)(request, Subscription.objects.filter(pk=subscription.pk))
        if action == "erase_history":
            return HttpResponseRedirect(reverse("admin:subscriptions_subscription_changelist"))
        return HttpResponseRedirect(reverse("admin:subscriptions_subscription_change", args=[subscription.pk]))

    def save_model(self, request: HttpRequest, obj: Subscription, form: object, change: bool) -> None:
        services.subscription_update(
            subscription=obj, rate_limit=obj.rate_limit, standard_webhooks=obj.standard_webhooks
        )


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
                (_delivery_list_url(notification__id__exact=obj.pk, status__exact=status), counts[status], label)
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
            _deliveries_table(rows, subscriber_column=True),
            more,
            _delivery_list_url(notification__id__exact=obj.pk),
        )


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
    list_display = ["id", "notification_link", "subscription_link", "callback", *DELIVERY_OUTCOME_FIELDS]
    list_filter = ["status"]
    search_fields = ["callback"]
    readonly_fields = [
        "uuid",
        "notification_link",
        "subscription_link",
        "callback",
        "replay",
        *DELIVERY_OUTCOME_FIELDS,
        "due_at",
        "created_at",
        "updated_at",
    ]
    inlines = [DeliveryAttemptInline]
    actions = ["retry"]

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="notification", ordering="notification_id")
    def notification_link(self, obj: Delivery) -> SafeString | str:
        # Built from the column alone: a join or a query per row would slow the list.
        return _admin_link(Notification, obj.notification_id)

    @admin.display(description="subscription", ordering="subscription_id")
    def subscription_link(self, obj: Delivery) -> SafeString | str:
        return _admin_link(Subscription, obj.subscription_id)

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
    def retry(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = services.deliveries_replay(queryset)
        self.message_user(request, f"{count} failed deliveries sent again.", messages.SUCCESS)


# django-axes' records of admin logins (README, Security), registered here rather than by axes
# (AXES_ENABLE_ADMIN = False) so that its action, like every other, names its permission.
@admin.register(AccessAttempt)
class AccessAttemptAdmin(axes_admin.AccessAttemptAdmin):
    @admin.action(description="Clean up expired attempts", permissions=["delete"])
    def cleanup_expired_attempts(self, request: HttpRequest, queryset: QuerySet) -> None:
        super().cleanup_expired_attempts(request, queryset)


admin.site.register(AccessLog, axes_admin.AccessLogAdmin)
admin.site.register(AccessFailureLog, axes_admin.AccessFailureLogAdmin)
