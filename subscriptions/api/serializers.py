"""What the JSON API accepts and returns. Secrets are write-only: no serializer ever returns one."""

from rest_framework import serializers

from subscriptions import ratelimit, services
from subscriptions.models import (
    MAX_CALLBACK_LENGTH,
    Delivery,
    DeliveryAttempt,
    Notification,
    Subscription,
    SubscriptionRequest,
)
from subscriptions.topics import MAX_TOPIC_LENGTH


class NotificationCreateSerializer(serializers.Serializer):
    topic = serializers.CharField(max_length=MAX_TOPIC_LENGTH, trim_whitespace=False)
    # Any JSON value, null included; the body delivered is its JSON encoding.
    content = serializers.JSONField(allow_null=True)

    def validate_topic(self, value: str) -> str:
        try:
            services.topic_keys_for_publish(value)
        except services.HubError as exc:
            raise serializers.ValidationError(exc.message) from None
        return value


class NotificationSerializer(serializers.ModelSerializer):
    deliveries = serializers.SerializerMethodField()

    class Meta:
        model = Notification
        fields = ["id", "topic", "content_type", "created_at", "spread_at", "deliveries"]

    def get_deliveries(self, notification: Notification) -> dict[str, int]:
        return self.context["delivery_counts"]


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
            "rate_limit",
            "consecutive_failures",
            "last_failure_at",
            "last_failure_reason",
            "paused_at",
            "pause_reason",
            "resume_after",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [name for name in fields if name != "rate_limit"]

    def validate_rate_limit(self, value: str) -> str:
        try:
            ratelimit.parse_rate(value)
        except ratelimit.InvalidRate as exc:
            raise serializers.ValidationError(str(exc)) from None
        return value.strip()


class SubscriptionCreateSerializer(serializers.Serializer):
    topic = serializers.CharField(max_length=MAX_TOPIC_LENGTH, trim_whitespace=False)
    callback = serializers.CharField(max_length=MAX_CALLBACK_LENGTH, trim_whitespace=False)
    lease_seconds = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    secret = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False, write_only=True)


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
        fields = ["number", "started_at", "duration_ms", "status_code", "error", "response_body"]


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
            "status",
            "attempts",
            "last_status_code",
            "last_error",
            "last_attempt_at",
            "delivered_at",
            "due_at",
            "created_at",
            "attempt_log",
        ]
