"""The operator's actions on subscriptions: pause, resume, retry failed, expire, erase as list actions and as
buttons on the change page, and the change page's replay and secret rotation forms. Each calls a service."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from subscriptions import rules, selectors, services
from subscriptions.admin.display import can_retry_deliveries, when
from subscriptions.admin.replay import replay
from subscriptions.api.errors import hub_error_for_api
from subscriptions.models import Delivery, Subscription


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


class SubscriptionActions:
    """The actions of SubscriptionAdmin (a ModelAdmin mixin): list actions, change-page buttons and forms."""

    actions = ["retry_failed", "pause", "resume", "expire_now", "erase_history"]
    # The actions the change page offers as buttons (the same methods as the list's actions).
    object_actions = {
        "retry_failed": "Retry failed deliveries",
        "pause": "Pause",
        "resume": "Resume",
        "expire_now": "Expire now",
        "erase_history": "Erase with its history",
    }

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
