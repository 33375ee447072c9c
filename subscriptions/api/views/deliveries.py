"""The API's deliveries: list them with their attempt log, read one, send a failed one again."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
)
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from subscriptions import selectors, services
from subscriptions.api import serializers
from subscriptions.api.errors import refusal
from subscriptions.api.permissions import CanManage
from subscriptions.api.views.common import errors
from subscriptions.filters import DeliveryFilterSerializer
from subscriptions.models import Delivery


@extend_schema_view(
    get=extend_schema(
        tags=["deliveries"],
        summary="List deliveries with their attempt log",
        parameters=[
            OpenApiParameter("subscription", int),
            OpenApiParameter("notification", int),
            OpenApiParameter("status", str, enum=Delivery.Status.values),
        ],
        responses={200: serializers.DeliverySerializer(many=True), **errors(400)},
    )
)
class DeliveryList(generics.ListAPIView):
    """Deliveries with their attempt log; filters: subscription, notification, status."""

    permission_classes = [CanManage]

    serializer_class = serializers.DeliverySerializer

    def get_queryset(self):
        filters = DeliveryFilterSerializer(data=self.request.query_params).selector_kwargs()
        return selectors.deliveries_list(**filters).prefetch_related("attempt_log").order_by("-id")


@extend_schema_view(
    get=extend_schema(tags=["deliveries"], responses={200: serializers.DeliverySerializer, **errors(404)})
)
class DeliveryDetail(generics.RetrieveAPIView):
    permission_classes = [CanManage]

    serializer_class = serializers.DeliverySerializer
    queryset = Delivery.objects.prefetch_related("attempt_log")


@extend_schema(
    tags=["deliveries"],
    summary="Send one failed delivery again with a fresh retry budget",
    request=None,
    responses={202: serializers.RetriedSerializer, **errors(404, 409)},
)
class DeliveryRetry(APIView):
    permission_classes = [CanManage]

    def post(self, request: Request, pk: int) -> Response:
        delivery = get_object_or_404(Delivery, pk=pk)
        if delivery.status != Delivery.Status.FAILED:
            return refusal(
                f"only a failed delivery can be retried; this one is {delivery.status}", status.HTTP_409_CONFLICT
            )
        count = services.deliveries_replay(selectors.deliveries_failed(delivery_id=pk))
        return Response({"retried": count}, status=status.HTTP_202_ACCEPTED)
