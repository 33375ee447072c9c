"""The API's notifications: publish a JSON message, and read one with its delivery counts."""

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from subscriptions import selectors, services
from subscriptions.api import serializers
from subscriptions.api.errors import hub_error_response
from subscriptions.api.permissions import CanPublish, CanPublishOrManage
from subscriptions.api.views.common import E, errors
from subscriptions.models import Notification
from subscriptions.throttles import PublishThrottle


@extend_schema(
    methods=["POST"],
    tags=["notifications"],
    summary="Publish a JSON message on a topic",
    description=(
        "With an `Idempotency-Key` header (up to 255 printable ASCII characters, per client), a repeat of the "
        "same topic and content within 24 hours is answered with the first answer (the same id, 202, and "
        "`Idempotent-Replayed: true`) and publishes nothing; the same key with another topic or content gets 422. "
        "`hub.events` and the topics under it (any case) are the hub's own operational events: publishing there "
        "gets 403, whatever the token."
    ),
    request=serializers.NotificationCreateSerializer,
    parameters=[
        OpenApiParameter(
            "Idempotency-Key",
            # Printable ASCII, visible at both ends, up to 255; the hub also reads the quoted form ("…").
            {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!#-~](?:[ -~]{0,253}[!-~])?$"},
            OpenApiParameter.HEADER,
            description="a unique value per message (a UUID), as a bare token or a quoted string",
        ),
        OpenApiParameter(
            "Idempotent-Replayed",
            str,
            OpenApiParameter.HEADER,
            response=[202],
            enum=["true"],
            description="present when this is the answer of an earlier request with the same Idempotency-Key",
        ),
    ],
    responses={
        202: serializers.AcceptedIdSerializer,
        **errors(400, 409, 413, 415, 422, 429),
        403: OpenApiResponse(
            E,
            description="the token lacks the publish permission, or the topic is hub.events or under it "
            "(reserved for the hub's own operational events)",
        ),
    },
    examples=[
        OpenApiExample(
            "trade document", value={"topic": "UN.CEFACT.TRADE.CO", "content": {"document": "CO-1"}}, request_only=True
        )
    ],
)
class NotificationCreate(APIView):
    permission_classes = [CanPublish]
    throttle_classes = [PublishThrottle]

    def post(self, request: Request) -> HttpResponse:
        fields = serializers.notification_create_fields(request.data)
        key = request.META.get("HTTP_IDEMPOTENCY_KEY")  # request.headers would build a dict of every header
        try:
            if key is None:
                return _accepted(services.notification_publish_json(**fields).pk)
            outcome = services.notification_publish_idempotent(client_id=request.user.pk, key=key, **fields)
        except services.HubError as exc:
            return hub_error_response(exc)
        response = _accepted(outcome.notification_id)
        if outcome.replayed:
            response["Idempotent-Replayed"] = "true"
        return response


def _accepted(notification_id: int) -> HttpResponse:
    """202 with `{"id": N}`, byte for byte what DRF's JSONRenderer writes for it.

    The view's one renderer is JSON, and negotiation has refused any other before
    the view runs; building and rendering a DRF Response for these few bytes was
    a twentieth of a publish's CPU. DRF still adds its headers (Allow) to it.
    """
    return HttpResponse(
        b'{"id":%d}' % notification_id, status=status.HTTP_202_ACCEPTED, content_type="application/json"
    )


@extend_schema(
    tags=["notifications"],
    summary="A notification and its delivery counts by status",
    responses={200: serializers.NotificationSerializer, **errors(404)},
)
class NotificationDetail(APIView):
    permission_classes = [CanPublishOrManage]

    def get(self, request: Request, pk: int) -> Response:
        notification = get_object_or_404(Notification.objects.defer("content"), pk=pk)
        counts = selectors.delivery_counts(notification_id=notification.pk)
        data = serializers.NotificationSerializer(notification, context={"delivery_counts": counts}).data
        return Response(data)
