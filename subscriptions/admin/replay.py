"""Replay that tells the truth: before failed deliveries are sent again, say what will become of them.

Deliveries that failed with a 4xx other than 408/429 were refused by the
subscriber and will most likely be refused again (and may pause the
subscription, holding its healthy traffic): the replay asks first, and can
leave them out. Deliveries of a paused subscription are not sent but wait for
its resume: the replay says so, and offers to resume first. Shared by the
delivery list's action, the delivery page's button and the subscription's
"retry failed" (list action and button).
"""

from collections.abc import Iterable

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join

from subscriptions import selectors, services
from subscriptions.admin.display import admin_link
from subscriptions.models import Delivery, Subscription

# POST fields of the confirmation step.
CONFIRMED = "replay_confirmed"
SKIP_REFUSED = "replay_skip_refused"
RESUME_FIRST = "replay_resume_first"


def can_resume(request: HttpRequest) -> bool:
    opts = Subscription._meta
    return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")


def _subscription_links(ids: Iterable[int]) -> str:
    return format_html_join(", ", "{}", ((admin_link(Subscription, pk),) for pk in ids))


def _paused_of(deliveries: QuerySet[Delivery]) -> QuerySet[Subscription]:
    held = deliveries.filter(status=Delivery.Status.FAILED, subscription__state=Subscription.State.PAUSED)
    return Subscription.objects.filter(pk__in=held.values("subscription_id"), state=Subscription.State.PAUSED)


def replay(
    model_admin: admin.ModelAdmin, request: HttpRequest, deliveries: QuerySet[Delivery], *, what: str
) -> TemplateResponse | None:
    """Send the failed ones among `deliveries` again, after a confirmation step when some will likely fail again
    or wait for a resume. Returns the confirmation page, or None once sent (the messages say what happened)."""
    outlook = selectors.replay_outlook(deliveries)
    if (outlook.refused or outlook.held) and CONFIRMED not in request.POST:
        return _confirmation(model_admin, request, outlook, what=what)
    if request.POST.get(SKIP_REFUSED) and outlook.refused:
        deliveries = deliveries.exclude(selectors.LIKELY_REFUSED)
        outlook = selectors.replay_outlook(deliveries)
    resumed = released = 0
    if request.POST.get(RESUME_FIRST) and outlook.held and can_resume(request):
        for subscription in _paused_of(deliveries):
            released += services.subscription_resume(subscription=subscription)
            resumed += 1
    if not outlook.failed:
        model_admin.message_user(request, "No failed deliveries among them: nothing was sent.", messages.WARNING)
        return None
    count = services.deliveries_replay(deliveries)
    model_admin.message_user(request, f"{count} failed deliveries sent again.", messages.SUCCESS)
    if resumed:
        model_admin.message_user(
            request,
            f"{resumed} paused subscriptions resumed first; {released} deliveries that waited were sent.",
            messages.SUCCESS,
        )
    elif outlook.held:
        more = " …" if len(outlook.paused_subscriptions) < outlook.held else ""
        model_admin.message_user(
            request,
            format_html(
                "{} of them belong to paused subscriptions ({}{}) and are not sent yet: they wait for the resume "
                "(or a successful probe). Resume on the subscription's page.",
                outlook.held,
                _subscription_links(outlook.paused_subscriptions),
                more,
            ),
            messages.WARNING,
        )
    return None


def _confirmation(
    model_admin: admin.ModelAdmin, request: HttpRequest, outlook: selectors.ReplayOutlook, *, what: str
) -> TemplateResponse:
    # The same POST again, confirmed: for a list action, its action and selection (or select_across) pass through.
    carried = [
        (name, value)
        for name in ("action", "select_across", "index", admin.helpers.ACTION_CHECKBOX_NAME)
        for value in request.POST.getlist(name)
    ]
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Replay failed deliveries?",
        "opts": model_admin.model._meta,
        "what": what,
        "outlook": outlook,
        "others": outlook.failed - outlook.refused,
        "refused_codes": ", ".join(str(code) for code in outlook.refused_codes),
        "paused_links": _subscription_links(outlook.paused_subscriptions),
        "may_resume": can_resume(request),
        "carried": carried,
        "form_url": request.get_full_path(),
        "confirmed": CONFIRMED,
        "skip_refused": SKIP_REFUSED,
        "resume_first": RESUME_FIRST,
        "cancel_url": request.META.get("HTTP_REFERER") or request.get_full_path(),
    }
    return TemplateResponse(request, "admin/subscriptions/replay_confirmation.html", context)
