"""What the JSON API accepts and returns. Secrets are write-only: no serializer ever returns one."""

from rest_framework import serializers

from subscriptions import services
from subscriptions.models import MAX_CALLBACK_LENGTH, Notification, Subscription, SubscriptionRequest
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
            "created_at",
            "updated_at",
        ]


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
