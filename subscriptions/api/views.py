"""The JSON API: publish, inspect notifications, manage subscriptions."""

from django.shortcuts import get_object_or_404
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from subscriptions import selectors, services
from subscriptions.api import serializers
from subscriptions.models import Notification, Subscription, SubscriptionRequest
from subscriptions.topics import InvalidTopic, subscription_key


def _refused(exc: services.HubError) -> Response:
    return Response({"detail": exc.message}, status=exc.status)


class NotificationCreate(APIView):
    def post(self, request: Request) -> Response:
        serializer = serializers.NotificationCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            notification = services.notification_publish_json(**serializer.validated_data)
        except services.HubError as exc:
            return _refused(exc)
        return Response({"id": notification.pk}, status=status.HTTP_202_ACCEPTED)


class NotificationDetail(APIView):
    def get(self, request: Request, pk: int) -> Response:
        notification = get_object_or_404(Notification.objects.defer("content"), pk=pk)
        counts = selectors.delivery_counts(notification_id=notification.pk)
        data = serializers.NotificationSerializer(notification, context={"delivery_counts": counts}).data
        return Response(data)


class SubscriptionListCreate(generics.ListAPIView):
    serializer_class = serializers.SubscriptionSerializer

    def get_queryset(self):
        queryset = Subscription.objects.order_by("id")
        topic = self.request.query_params.get("topic")
        callback = self.request.query_params.get("callback")
        if "\x00" in (topic or "") + (callback or ""):
            # Validation never stores a NUL, and PostgreSQL cannot even compare one (a 500, not an empty list).
            return queryset.none()
        if topic is not None:
            # The same topic however it is spelled: `un.cefact` finds `UN.CEFACT.*`.
            try:
                queryset = queryset.filter(topic_key=subscription_key(topic))
            except InvalidTopic:
                queryset = queryset.none()
        if callback is not None:
            queryset = queryset.filter(callback=callback)
        return queryset

    def post(self, request: Request) -> Response:
        serializer = serializers.SubscriptionCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            subscription_request = services.subscription_request(
                mode=SubscriptionRequest.Mode.SUBSCRIBE, **serializer.validated_data
            )
        except services.HubError as exc:
            return _refused(exc)
        data = serializers.SubscriptionRequestSerializer(subscription_request).data
        return Response(data, status=status.HTTP_202_ACCEPTED)


class SubscriptionDetail(generics.RetrieveDestroyAPIView):
    serializer_class = serializers.SubscriptionSerializer
    queryset = Subscription.objects.all()

    def perform_destroy(self, instance: Subscription) -> None:
        services.subscription_delete(subscription=instance)


class SubscriptionRequestDetail(generics.RetrieveAPIView):
    serializer_class = serializers.SubscriptionRequestSerializer
    queryset = SubscriptionRequest.objects.all()
