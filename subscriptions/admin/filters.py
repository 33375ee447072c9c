"""The lists' filters: choices (status, dead letters, time ranges, outcome) and typed ones (topic prefix,
status code, subscription, notification).

Every filter owns its URL parameter, so a list scoped through the URL (a link
from a subscription's page: `?subscription__id__exact=5`) shows the scope in the
sidebar with a way to clear it, instead of "All". A typed value the filter
cannot read selects nothing and says why (a message), never a 500.
"""

from datetime import timedelta

from django.contrib import admin, messages
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from subscriptions import selectors
from subscriptions.models import Delivery, Subscription

# Time ranges the lists offer: (parameter value, label, minutes back from now).
RECENT_RANGES = [
    ("15m", "Last 15 minutes", 15),
    ("1h", "Last hour", 60),
    ("6h", "Last 6 hours", 360),
    ("24h", "Last 24 hours", 1440),
    ("7d", "Last 7 days", 10080),
]
# A held delivery: pending for a subscription that is paused (it waits for the resume or a probe).
HELD = Q(status=Delivery.Status.PENDING, subscription__state=Subscription.State.PAUSED)


class InputFilter(admin.SimpleListFilter):
    """A filter with a text box instead of choices; the sidebar shows the value in force and a link to clear it."""

    template = "admin/subscriptions/input_filter.html"
    placeholder = ""

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return []

    def has_output(self) -> bool:
        return True

    def choices(self, changelist: object) -> object:
        # One "choice" carrying what the template needs: the value, the other parameters, the clear link.
        others = [(name, value) for name, value in changelist.params.items() if name != self.parameter_name]
        yield {
            "value": self.value() or "",
            "parameter": self.parameter_name,
            "placeholder": self.placeholder,
            "others": others,
            "clear": changelist.get_query_string(remove=[self.parameter_name]),
        }

    def refuse(self, request: HttpRequest, queryset: QuerySet, message: str) -> QuerySet:
        messages.error(request, f"{self.title}: {message}")
        return queryset.none()

    def whole_number(self, request: HttpRequest) -> int | None:
        value = (self.value() or "").strip().lstrip("#")
        if value.isascii() and value.isdigit() and len(value) < 19:
            return int(value)
        messages.error(request, f"{self.title}: {self.value()[:40]!r} is not a number")
        return None


class RecentFilter(admin.SimpleListFilter):
    """Rows whose `field` falls within a recent range."""

    field = ""

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(value, label) for value, label, _ in RECENT_RANGES]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        minutes = {value: minutes for value, _, minutes in RECENT_RANGES}.get(self.value() or "")
        if minutes is None:
            return queryset
        return queryset.filter(**{f"{self.field}__gte": timezone.now() - timedelta(minutes=minutes)})


class TopicPrefixFilter(InputFilter):
    """Topics starting with the text: a URL prefix exactly, a dotted prefix in any case."""

    title = "topic prefix"
    parameter_name = "topic_prefix"
    placeholder = "UN.CEFACT or https://…"
    field = "topic"

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        prefix = (self.value() or "").strip()
        if not prefix:
            return queryset
        return queryset.filter(**{f"{self.field}__istartswith": prefix})


# --- Subscriptions ---------------------------------------------------------------------------------


class ExpiryFilter(admin.SimpleListFilter):
    title = "lease"
    parameter_name = "lease"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("live", "Live"), ("expired", "Expired (awaiting removal)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in ("live", "expired"):
            return selectors.subscriptions_list(among=queryset, expired=self.value() == "expired")
        return queryset


class DeadLettersFilter(admin.SimpleListFilter):
    title = "dead letters"
    parameter_name = "dead_letters"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Has failed deliveries"), ("no", "No dead letters")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        failed = Exists(Delivery.objects.filter(subscription_id=OuterRef("pk"), status=Delivery.Status.FAILED))
        if self.value() == "yes":
            return queryset.filter(failed)
        if self.value() == "no":
            return queryset.filter(~failed)
        return queryset


class SubscriptionTopicFilter(TopicPrefixFilter):
    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        prefix = (self.value() or "").strip()
        if not prefix:
            return queryset
        return queryset.filter(Q(topic__startswith=prefix) | Q(topic_key__startswith=prefix.lower()))


# --- Deliveries ------------------------------------------------------------------------------------


class DeliveryStatusFilter(admin.SimpleListFilter):
    """The delivery's status, with pending split into in flight and held (its subscription is paused)."""

    title = "status"
    parameter_name = "status__exact"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [
            (Delivery.Status.PENDING, "Pending (in flight)"),
            ("held", "Held (paused)"),
            (Delivery.Status.DELIVERED, "Delivered"),
            (Delivery.Status.FAILED, "Failed (dead letter)"),
            (Delivery.Status.CANCELLED, "Cancelled"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value == "held":
            return queryset.filter(HELD)
        if value == Delivery.Status.PENDING:
            return queryset.filter(status=value).exclude(subscription__state=Subscription.State.PAUSED)
        if value in Delivery.Status.values:
            return queryset.filter(status=value)
        if value is not None:
            messages.error(request, f"status: {value[:40]!r} is not a delivery status")
            return queryset.none()
        return queryset


class StatusCodeFilter(InputFilter):
    """The last answer's HTTP status: exactly (503) or by class (5xx)."""

    title = "last status code"
    parameter_name = "status_code"
    placeholder = "503 or 5xx"

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = (self.value() or "").strip().lower()
        if not value:
            return queryset
        if len(value) == 3 and value[0] in "12345" and value[1:] == "xx":
            low = int(value[0]) * 100
            return queryset.filter(last_status_code__gte=low, last_status_code__lt=low + 100)
        if value.isascii() and value.isdigit() and 100 <= int(value) <= 599:
            return queryset.filter(last_status_code=int(value))
        return self.refuse(request, queryset, f"{value[:40]!r} is not an HTTP status (100-599) or a class like 5xx")


class AttemptedFilter(RecentFilter):
    title = "last attempt"
    parameter_name = "attempted"
    field = "last_attempt_at"


class DeliveryTopicFilter(TopicPrefixFilter):
    field = "notification__topic"


class SubscriptionScopeFilter(InputFilter):
    title = "subscription"
    parameter_name = "subscription__id__exact"
    placeholder = "subscription id"

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() is None:
            return queryset
        pk = self.whole_number(request)
        return queryset.none() if pk is None else queryset.filter(subscription_id=pk)


class NotificationScopeFilter(InputFilter):
    title = "notification"
    parameter_name = "notification__id__exact"
    placeholder = "notification id"

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() is None:
            return queryset
        pk = self.whole_number(request)
        return queryset.none() if pk is None else queryset.filter(notification_id=pk)


# --- Notifications ---------------------------------------------------------------------------------


class OutcomeFilter(admin.SimpleListFilter):
    """Notifications by what became of their deliveries."""

    title = "outcome"
    parameter_name = "outcome"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [
            ("failed", "Some failed"),
            ("pending", "Some pending"),
            ("delivered", "All delivered"),
            ("unspread", "Not spread yet"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        def having(status: str) -> Exists:
            return Exists(Delivery.objects.filter(notification_id=OuterRef("pk"), status=status))

        value = self.value()
        if value in ("failed", "pending"):
            return queryset.filter(having(value))
        if value == "delivered":
            others = Delivery.objects.filter(notification_id=OuterRef("pk")).exclude(status=Delivery.Status.DELIVERED)
            return queryset.filter(having(Delivery.Status.DELIVERED), ~Exists(others), spread_at__isnull=False)
        if value == "unspread":
            return queryset.filter(spread_at__isnull=True)
        return queryset


class CreatedFilter(RecentFilter):
    title = "published"
    parameter_name = "published"
    field = "created_at"
