"""What the read edges accept as filters: small serializers that turn query parameters and command options into
a selector's keyword arguments (subscriptions/selectors.py), each refusal saying what was wrong."""

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
