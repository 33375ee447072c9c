"""What the JSON API accepts and returns. Secrets are write-only: no serializer ever returns one."""

from typing import Any

from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from subscriptions import ratelimit, rules, services
from subscriptions.api.errors import hub_error_for_api
from subscriptions.models import (
    ATTEMPT_FIELDS,
    DELIVERY_OUTCOME_FIELDS,
    MAX_CALLBACK_LENGTH,
    Delivery,
    DeliveryAttempt,
    Notification,
    Subscription,
    SubscriptionRequest,
)
from subscriptions.topics import MAX_TOPIC_LENGTH

# Patterns published in the OpenAPI schema. They describe (a little more
# strictly, for clarity) what the hub's own rules accept, so a client that
# follows the schema is never refused; the rules themselves run in
# subscriptions/ and say precisely what is wrong.
_NO_SPACE = r"[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Printable ASCII but the characters a Link target cannot hold (topics.UNSAFE_LINK_CHARACTERS).
_URI_CHAR = r"[\u0021\u0023-\u003b\u003d\u003f-\u005b\u005d\u005f\u0061-\u007a\u007e]"
_URL = r"[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9](?:[A-Za-z0-9.-]{0,200})(?:[/?]" + _URI_CHAR + "*)?"
_SEGMENT = _NO_SPACE + r'.*:<>"{}|\\^`]+'
TOPIC_PATTERN = rf"^(?:{_URL}|{_SEGMENT}(?:\.{_SEGMENT})*(?:\.\*)?)$"
PUBLISH_TOPIC_PATTERN = rf"^(?:{_URL}|{_SEGMENT}(?:\.{_SEGMENT})*)$"
# The default HUB_ALLOWED_PORTS (netguard.DEFAULT_ALLOWED_PORTS); a test checks they agree.
_PORT = (
    r"(?::(?:80|443|102[4-9]|10[3-9][0-9]|1[1-9][0-9]{2}|[2-9][0-9]{3}|[1-5][0-9]{4}|6[0-4][0-9]{3}"
    r"|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
)
CALLBACK_PATTERN = rf"^[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9](?:[A-Za-z0-9.-]{{0,200}}){_PORT}(?:[/?][\u0021-\u007e]*)?$"
SECRET_PATTERN = r"^[\u0020-\u007e]{0,199}$"  # noqa: S105 - a pattern, not a password
# The rate's units come from its one parser (ratelimit.parse_rate); a test checks
# that everything this pattern accepts, the parser reads.
RATE_PATTERN = rf"^(?:[1-9][0-9]{{0,8}}/(?:[1-9][0-9]{{0,5}})?(?:{'|'.join(ratelimit.UNITS)})|off)?$"


class SchemaPattern(RegexValidator):
    """A pattern for the OpenAPI schema only: it refuses nothing itself."""

    def __call__(self, value: object) -> None:
        return None


def _pattern(pattern: str, message: str) -> RegexValidator:
    return SchemaPattern(pattern, message)


class NotificationCreateSerializer(serializers.Serializer):
    topic = serializers.CharField(
        max_length=MAX_TOPIC_LENGTH,
        trim_whitespace=False,
        validators=[_pattern(PUBLISH_TOPIC_PATTERN, "not a topic: a dotted predicate like UN.CEFACT.TRADE or a URL")],
        help_text="a dotted predicate (UN.CEFACT.TRADE.CO) or an http(s) URL; no wildcard",
    )
    # Any JSON value, null included; the body delivered is its JSON encoding.
    content = serializers.JSONField(allow_null=True)

    def validate_topic(self, value: str) -> str:
        try:
            services.topic_keys_for_publish(value)
        except services.HubError as exc:
            raise serializers.ValidationError(hub_error_for_api(exc)[1]) from None
        return value


def notification_create_fields(data: object) -> dict[str, Any]:
    """The validated fields of a publish request body: NotificationCreateSerializer's, refusals its own.

    A body that is plainly valid (an object with a topic string the hub can publish
    on and a content) is read directly: building the serializer (its fields copied
    per instance) and running its validation was a tenth of a publish's CPU. Any
    other body goes through the serializer, which says precisely what is wrong.
    """
    if isinstance(data, dict) and "content" in data:
        topic = data.get("topic")
        if type(topic) is str and 0 < len(topic) <= MAX_TOPIC_LENGTH:
            try:
                services.topic_keys_for_publish(topic)
            except services.HubError:
                pass
            else:
                return {"topic": topic, "content": data["content"]}
    serializer = NotificationCreateSerializer(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


class NotificationSerializer(serializers.ModelSerializer):
    deliveries = serializers.SerializerMethodField()

    class Meta:
        model = Notification
        fields = ["id", "topic", "content_type", "created_at", "spread_at", "deliveries"]

    def get_deliveries(self, notification: Notification) -> dict[str, int]:
        return self.context["delivery_counts"]


# What PATCH /api/subscriptions/<id>/ may change; everything else is the subscriber's or the hub's.
SUBSCRIPTION_WRITABLE_FIELDS = ("rate_limit", "standard_webhooks")


class SubscriptionSerializer(serializers.ModelSerializer):
    has_secret = serializers.BooleanField(read_only=True)

    class Meta:
        model = Subscription
        fields = [
            "id",
            "topic",
            "callback",
            "state",
            "lease_seconds",
            "verified_at",
            "expires_at",
            "has_secret",
            "previous_secret_expires_at",
            "rate_limit",
            "standard_webhooks",
            "consecutive_failures",
            "last_failure_at",
            "last_failure_reason",
            "paused_at",
            "pause_reason",
            "resume_after",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [name for name in fields if name not in SUBSCRIPTION_WRITABLE_FIELDS]

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["rate_limit"].validators.append(_pattern(RATE_PATTERN, 'a rate like "100/10s", or "" or "off"'))
        return fields

    def to_internal_value(self, data: object) -> dict:
        # DRF drops read-only and unknown fields silently: a PATCH of `topic` would answer 200 and change nothing.
        if isinstance(data, dict):
            writable = ", ".join(SUBSCRIPTION_WRITABLE_FIELDS)
            refused = {
                str(name): [f"{name} cannot be changed; the writable fields are {writable}"]
                if name in self.fields
                else [f"{name} is not a field of a subscription; the writable fields are {writable}"]
                for name in data
                if name not in SUBSCRIPTION_WRITABLE_FIELDS
            }
            if refused:
                raise serializers.ValidationError(refused)
        return super().to_internal_value(data)

    def validate_rate_limit(self, value: str) -> str:
        try:
            ratelimit.parse_rate(value)
        except ratelimit.InvalidRate as exc:
            raise serializers.ValidationError(str(exc)) from None
        return value.strip()


class SubscriptionCreateSerializer(serializers.Serializer):
    topic = serializers.CharField(
        max_length=MAX_TOPIC_LENGTH,
        trim_whitespace=False,
        validators=[_pattern(TOPIC_PATTERN, "not a topic: a dotted predicate like UN.CEFACT.* or a URL")],
        help_text="a dotted predicate, optionally ending in .* (prefix match), or an http(s) URL (exact match)",
    )
    callback = serializers.CharField(
        max_length=MAX_CALLBACK_LENGTH,
        trim_whitespace=False,
        validators=[_pattern(CALLBACK_PATTERN, "not an http(s) URL")],
        help_text="an http(s) URL on a public address",
    )
    lease_seconds = serializers.IntegerField(
        min_value=1, required=False, allow_null=True, help_text="clamped to the hub's bounds"
    )
    secret = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        write_only=True,
        validators=[_pattern(SECRET_PATTERN, "use printable ASCII")],
        help_text="signs deliveries (X-Hub-Signature); fewer than 200 bytes, never returned",
    )


class RotateSecretSerializer(serializers.Serializer):
    """POST /api/subscriptions/<id>/rotate-secret: the new secret (or a random one) and the old one's overlap."""

    secret = serializers.CharField(
        required=False,
        # An empty one reaches the rule below, which says what to do instead.
        allow_blank=True,
        trim_whitespace=False,
        write_only=True,
        validators=[_pattern(SECRET_PATTERN.replace("{0,199}", "{1,199}"), "use printable ASCII")],
        help_text="the new secret, fewer than 200 bytes; leave it out for a random one (shown once in the answer)",
    )
    grace_seconds = serializers.IntegerField(
        required=False,
        default=rules.ROTATION_GRACE_SECONDS_DEFAULT,
        min_value=0,
        max_value=rules.ROTATION_GRACE_SECONDS_MAX,
        error_messages={"min_value": rules.ROTATION_GRACE_REFUSAL, "max_value": rules.ROTATION_GRACE_REFUSAL},
        help_text="how long the replaced secret still signs webhook-signature beside the new one (0 to 30 days)",
    )

    def to_internal_value(self, data: object) -> dict:
        # A misspelt `grace_secs` would otherwise be dropped silently, and the default overlap applied.
        if isinstance(data, dict):
            unknown = {
                str(name): [f"{name} is not a field of a rotation; the fields are secret, grace_seconds"]
                for name in data
                if name not in self.fields
            }
            if unknown:
                raise serializers.ValidationError(unknown)
        return super().to_internal_value(data)

    def validate_secret(self, value: str) -> str:
        try:
            rules.rotation_secret_validate(value)
        except services.HubError as exc:
            raise serializers.ValidationError(hub_error_for_api(exc)[1]) from None
        return value


class RotatedSecretSerializer(SubscriptionSerializer):
    """The subscription after a rotation, with the secret the hub made (context `generated_secret`), if any."""

    secret = serializers.SerializerMethodField(
        help_text="the secret the hub made, shown this once; null when you gave yours (it is never returned)"
    )

    class Meta(SubscriptionSerializer.Meta):
        fields = [*SubscriptionSerializer.Meta.fields, "secret"]

    @extend_schema_field({"type": "string", "nullable": True})
    def get_secret(self, subscription: Subscription) -> str | None:
        # Never the subscription's column: only a secret the caller has not seen yet.
        return self.context.get("generated_secret")


class SubscriptionRequestSerializer(serializers.ModelSerializer):
    class Meta:
        model = SubscriptionRequest
        fields = [
            "id",
            "mode",
            "topic",
            "callback",
            "lease_seconds",
            "state",
            "reason",
            "response_status",
            "created_at",
            "completed_at",
        ]


class DeliveryAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeliveryAttempt
        fields = ATTEMPT_FIELDS


class DeliverySerializer(serializers.ModelSerializer):
    attempt_log = DeliveryAttemptSerializer(many=True, read_only=True)

    class Meta:
        model = Delivery
        fields = [
            "id",
            "uuid",
            "notification",
            "subscription",
            "callback",
            *DELIVERY_OUTCOME_FIELDS,
            "due_at",
            "created_at",
            "replay",
            "attempt_log",
        ]


class ErrorSerializer(serializers.Serializer):
    """Every refusal of the REST API has this shape."""

    detail = serializers.CharField(help_text="what was wrong, in a sentence")
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text='each field\'s messages; "non_field_errors" for what concerns the request as a whole',
    )


class AcceptedIdSerializer(serializers.Serializer):
    id = serializers.IntegerField()


class RetriedSerializer(serializers.Serializer):
    retried = serializers.IntegerField(help_text="how many failed deliveries were sent again")


class ResumedSerializer(SubscriptionSerializer):
    released = serializers.IntegerField(help_text="deliveries that waited and were sent")

    class Meta(SubscriptionSerializer.Meta):
        fields = [*SubscriptionSerializer.Meta.fields, "released"]


class ReplayedSerializer(serializers.Serializer):
    replayed = serializers.IntegerField(help_text="how many notifications were sent again, each as a new delivery")
