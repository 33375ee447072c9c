"""What the read edges accept as filters: small serializers that turn query parameters and command options into
a selector's keyword arguments (subscriptions/selectors/lists.py), each refusal saying what was wrong."""

from typing import Any

from rest_framework import serializers

from subscriptions.models import Delivery

ID_REFUSAL = "must be a whole number (an id)"
STATUS_REFUSAL = f"must be one of {', '.join(Delivery.Status.values)}"
SINCE_REFUSAL = "must be an ISO 8601 time such as 2026-11-28T10:00:00Z"


class IdField(serializers.Field):
    """A row id, read as Python's int() reads it (what the API has always accepted)."""

    def to_internal_value(self, data: Any) -> int:
        try:
            return int(data)
        except (TypeError, ValueError):
            raise serializers.ValidationError(ID_REFUSAL) from None

    def to_representation(self, value: int) -> int:
        return value


class FilterSerializer(serializers.Serializer):
    def selector_kwargs(self) -> dict[str, Any]:
        """The selector's keyword arguments; raises DRF's ValidationError naming the first refused filter.

        One filter is refused at a time, the first in field order, as the API has always answered.
        """
        if not self.is_valid():
            name, details = next(iter(self.errors.items()))
            raise serializers.ValidationError({name: [str(details[0])]})
        return dict(self.validated_data)


class DeliveryFilterSerializer(FilterSerializer):
    """GET /api/deliveries/'s filters: `subscription`, `notification`, `status`."""

    subscription = IdField(required=False, source="subscription_id")
    notification = IdField(required=False, source="notification_id")
    status = serializers.ChoiceField(
        choices=Delivery.Status.values, required=False, error_messages={"invalid_choice": STATUS_REFUSAL}
    )


class FailedDeliveryFilterSerializer(FilterSerializer):
    """Which failed deliveries a replay sends: a subscription's, those failed `since` (UTC if no offset), one."""

    subscription = IdField(required=False, source="subscription_id")
    since = serializers.DateTimeField(required=False, error_messages={"invalid": SINCE_REFUSAL})
    delivery = IdField(required=False, source="delivery_id")


# What a replay by time window may select (services/replaying.REPLAYABLE): settled deliveries.
REPLAY_STATUSES = [Delivery.Status.DELIVERED, Delivery.Status.FAILED, Delivery.Status.CANCELLED]
REPLAY_STATUS_REFUSAL = f"must be one of {', '.join(REPLAY_STATUSES)} (settled deliveries)"
TIME_REFUSAL = "must be an ISO 8601 time such as 2026-11-28T10:00:00Z"


class ReplayWindowSerializer(FilterSerializer):
    """A replay by time window (POST /api/subscriptions/<id>/replay, hub_replay): notifications published in
    [since, until) whose delivery to the subscription is in one of `status` (default: every settled one)."""

    since = serializers.DateTimeField(
        error_messages={"invalid": TIME_REFUSAL}, help_text="ISO 8601; UTC when it has no offset"
    )
    until = serializers.DateTimeField(
        required=False,
        allow_null=True,
        error_messages={"invalid": TIME_REFUSAL},
        help_text="ISO 8601, exclusive; default: now",
    )
    status = serializers.ListField(
        child=serializers.ChoiceField(
            choices=REPLAY_STATUSES, error_messages={"invalid_choice": REPLAY_STATUS_REFUSAL}
        ),
        required=False,
        allow_empty=False,
        source="statuses",
        help_text="which deliveries' notifications to send again; default: delivered, failed and cancelled",
    )
