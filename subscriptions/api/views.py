"""The JSON API: publish, inspect notifications, manage subscriptions."""

import math

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from subscriptions import rules, selectors, services, throttles
from subscriptions.api import serializers
from subscriptions.api.errors import hub_error_response, refusal
from subscriptions.api.permissions import CanManage, CanPublish, CanPublishOrManage
from subscriptions.filters import DeliveryFilterSerializer, ReplayWindowSerializer
from subscriptions.models import Delivery, Notification, Subscription, SubscriptionRequest
from subscriptions.throttles import PublishThrottle
from subscriptions.topics import InvalidTopic, subscription_key

E = serializers.ErrorSerializer
AUTH_ERRORS = {401: E, 403: E}


def errors(*codes: int) -> dict[int, type]:
    return {**AUTH_ERRORS, **dict.fromkeys(codes, E)}


def _throttled(wait: float) -> Response:
    seconds = max(1, math.ceil(wait))
    response = refusal(
        f"too many subscription requests; try again in {seconds} seconds (HUB_THROTTLE_SUBSCRIBE)",
        status.HTTP_429_TOO_MANY_REQUESTS,
    )
    response["Retry-After"] = str(seconds)
    return response


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

    def post(self, request: Request) -> Response:
        serializer = serializers.NotificationCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key = request.headers.get("Idempotency-Key")
        try:
            if key is None:
                notification = services.notification_publish_json(**serializer.validated_data)
                return Response({"id": notification.pk}, status=status.HTTP_202_ACCEPTED)
            outcome = services.notification_publish_idempotent(
                client_id=request.user.pk, key=key, **serializer.validated_data
            )
        except services.HubError as exc:
            return hub_error_response(exc)
        response = Response({"id": outcome.notification_id}, status=status.HTTP_202_ACCEPTED)
        if outcome.replayed:
            response["Idempotent-Replayed"] = "true"
        return response


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


@extend_schema_view(
    get=extend_schema(
        tags=["subscriptions"],
        summary="List subscriptions",
        parameters=[
            OpenApiParameter("topic", str, description="the topic however spelled (un.cefact finds UN.CEFACT.*)"),
            OpenApiParameter("callback", str, description="the callback URL, exactly"),
        ],
        responses={200: serializers.SubscriptionSerializer(many=True), **errors()},
    ),
    post=extend_schema(
        tags=["subscriptions"],
        summary="Subscribe (verified asynchronously, as on /hub)",
        description=(
            "The topic may be `hub.events` (every operational event the hub publishes), one event's topic such as "
            "`hub.events.subscription.paused`, or `hub`: only here, with the manage permission; /hub refuses them."
        ),
        request=serializers.SubscriptionCreateSerializer,
        responses={202: serializers.SubscriptionRequestSerializer, **errors(400, 404, 429)},
    ),
)
class SubscriptionListCreate(generics.ListAPIView):
    permission_classes = [CanManage]
    serializer_class = serializers.SubscriptionSerializer

    def get_queryset(self):
        topic = self.request.query_params.get("topic")
        callback = self.request.query_params.get("callback")
        if "\x00" in (topic or "") + (callback or ""):
            # Validation never stores a NUL, and PostgreSQL cannot even compare one (a 500, not an empty list).
            return Subscription.objects.none()
        topic_keys = None
        if topic is not None:
            # The same topic however it is spelled: `un.cefact` finds `UN.CEFACT.*`; an invalid one finds nothing.
            try:
                topic_keys = [subscription_key(topic)]
            except InvalidTopic:
                return Subscription.objects.none()
        return selectors.subscriptions_list(topic_keys=topic_keys, callback=callback).order_by("id")

    def post(self, request: Request) -> Response:
        serializer = serializers.SubscriptionCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        wait = throttles.subscribe_wait(request._request, serializer.validated_data["callback"])
        if wait is not None:
            return _throttled(wait)
        try:
            # Tokens that manage the hub may subscribe to its operational events (hub.events); /hub may not.
            subscription_request = services.subscription_request(
                mode=SubscriptionRequest.Mode.SUBSCRIBE, events_allowed=True, **serializer.validated_data
            )
        except services.HubError as exc:
            return hub_error_response(exc)
        data = serializers.SubscriptionRequestSerializer(subscription_request).data
        return Response(data, status=status.HTTP_202_ACCEPTED)


@extend_schema_view(
    get=extend_schema(tags=["subscriptions"], responses={200: serializers.SubscriptionSerializer, **errors(404)}),
    patch=extend_schema(
        tags=["subscriptions"],
        summary="Set the subscription's rate limit and Standard Webhooks headers",
        responses={200: serializers.SubscriptionSerializer, **errors(400, 404)},
    ),
    delete=extend_schema(
        tags=["subscriptions"],
        summary="Remove the subscription (with erase=history: and every delivery and attempt it had)",
        parameters=[
            OpenApiParameter(
                "erase",
                str,
                enum=["history"],
                description="history: also delete every delivery and attempt of the subscription, and its "
                "completed subscribe requests, at once",
            )
        ],
        responses={204: None, **errors(400, 404)},
    ),
)
class SubscriptionDetail(generics.RetrieveUpdateDestroyAPIView):
    """GET, PATCH (`rate_limit`, `standard_webhooks`) and DELETE one subscription."""

    permission_classes = [CanManage]

    serializer_class = serializers.SubscriptionSerializer
    queryset = Subscription.objects.all()
    http_method_names = ["get", "patch", "delete", "head", "options"]

    def perform_update(self, serializer: serializers.SubscriptionSerializer) -> None:
        try:
            services.subscription_update(
                subscription=serializer.instance,
                rate_limit=serializer.validated_data.get("rate_limit"),
                standard_webhooks=serializer.validated_data.get("standard_webhooks"),
            )
        except services.HubError as exc:
            # The serializer checks the rate first; this keeps a refusal a 400 should the two ever disagree.
            raise ValidationError({"rate_limit": [exc.message]}) from None
        serializer.instance.refresh_from_db()

    def destroy(self, request: Request, *args: object, **kwargs: object) -> Response:
        erase = request.query_params.get("erase")
        if erase not in (None, "history"):
            return refusal(f"erase must be history, not {erase[:40]!r}", status.HTTP_400_BAD_REQUEST, "erase")
        subscription = self.get_object()
        if erase == "history":
            services.subscription_erase(subscription=subscription)
        else:
            services.subscription_delete(subscription=subscription)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(
    tags=["subscriptions"],
    summary="Send every failed delivery of the subscription again",
    request=None,
    responses={202: serializers.RetriedSerializer, **errors(404)},
)
class SubscriptionRetryFailed(APIView):
    permission_classes = [CanManage]

    def post(self, request: Request, pk: int) -> Response:
        subscription = get_object_or_404(Subscription, pk=pk)
        count = services.deliveries_replay(selectors.deliveries_failed(subscription_id=subscription.pk))
        return Response({"retried": count}, status=status.HTTP_202_ACCEPTED)


@extend_schema(
    tags=["subscriptions"],
    summary="Send every notification of a time window to the subscription again, as new deliveries",
    description=(
        "Each notification published in [since, until) whose delivery to this subscription is in one of `status` "
        "(default: delivered, failed, cancelled) is sent once more as a new delivery (new id and X-Hub-Delivery), "
        "through the ordinary pipeline: rate limit, pause, the current callback and secret. The originals stay. "
        "A window that starts before HUB_RETENTION_DAYS is refused with 400."
    ),
    request=ReplayWindowSerializer,
    responses={202: serializers.ReplayedSerializer, **errors(400, 404, 409, 415)},
    examples=[
        OpenApiExample(
            "a day, failed and delivered",
            value={"since": "2026-11-28T00:00:00Z", "until": "2026-11-29T00:00:00Z", "status": ["failed", "delivered"]},
            request_only=True,
        )
    ],
)
class SubscriptionReplay(APIView):
    permission_classes = [CanManage]

    def post(self, request: Request, pk: int) -> Response:
        subscription = get_object_or_404(Subscription, pk=pk)
        window = ReplayWindowSerializer(data=request.data)
        window.is_valid(raise_exception=True)
        try:
            count = services.subscription_replay(subscription=subscription, **window.validated_data)
        except services.HubError as exc:
            return hub_error_response(exc)
        return Response({"replayed": count}, status=status.HTTP_202_ACCEPTED)


@extend_schema(
    tags=["subscriptions"],
    summary="Give the subscription a new secret, the old one still signing for a grace period",
    description=(
        "The new secret (`secret`, or a random `whsec_…` one when left out, shown once in the answer) signs every "
        f"delivery from now on. For `grace_seconds` (default {rules.ROTATION_GRACE_SECONDS_DEFAULT}, at most "
        f"{rules.ROTATION_GRACE_SECONDS_MAX}) the replaced secret still signs "
        "as well where the header takes several signatures: `webhook-signature` (Standard Webhooks) carries one "
        "with each secret. `X-Hub-Signature` takes one and is made with the new secret: a subscriber that checks "
        "it accepts both secrets during the rotation. After the grace period the old secret is erased. Rotating "
        "to the current secret changes nothing; a subscription without a secret gets the new one alone at once."
    ),
    request=serializers.RotateSecretSerializer,
    responses={200: serializers.RotatedSecretSerializer, **errors(400, 404, 409, 415)},
    examples=[
        OpenApiExample("a random secret, a day's overlap", value={"grace_seconds": 86400}, request_only=True),
        OpenApiExample(
            "your own secret, a week's overlap",
            value={"secret": "n3w-s3cret", "grace_seconds": 604800},
            request_only=True,
        ),
    ],
)
class SubscriptionRotateSecret(APIView):
    permission_classes = [CanManage]

    def post(self, request: Request, pk: int) -> Response:
        subscription = get_object_or_404(Subscription, pk=pk)
        serializer = serializers.RotateSecretSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            rotation = services.subscription_rotate_secret(subscription=subscription, **serializer.validated_data)
        except services.HubError as exc:
            return hub_error_response(exc)
        subscription.refresh_from_db()
        generated = rotation.secret if rotation.generated else None
        return Response(serializers.RotatedSecretSerializer(subscription, context={"generated_secret": generated}).data)


@extend_schema(
    tags=["subscriptions"],
    summary="Pause deliveries to the subscription (they wait, nothing is dropped)",
    request=None,
    responses={200: serializers.SubscriptionSerializer, **errors(404)},
)
class SubscriptionPause(APIView):
    permission_classes = [CanManage]

    def post(self, request: Request, pk: int) -> Response:
        subscription = get_object_or_404(Subscription, pk=pk)
        services.subscription_pause(subscription=subscription)
        subscription.refresh_from_db()
        return Response(serializers.SubscriptionSerializer(subscription).data)


@extend_schema(
    tags=["subscriptions"],
    summary="Resume the subscription and send what waited",
    request=None,
    responses={200: serializers.ResumedSerializer, **errors(404)},
)
class SubscriptionResume(APIView):
    permission_classes = [CanManage]

    def post(self, request: Request, pk: int) -> Response:
        subscription = get_object_or_404(Subscription, pk=pk)
        released = services.subscription_resume(subscription=subscription)
        subscription.refresh_from_db()
        return Response({**serializers.SubscriptionSerializer(subscription).data, "released": released})


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


@extend_schema_view(
    get=extend_schema(
        tags=["subscriptions"],
        summary="A subscribe request and its verification outcome",
        responses={200: serializers.SubscriptionRequestSerializer, **errors(404)},
    )
)
class SubscriptionRequestDetail(generics.RetrieveAPIView):
    permission_classes = [CanManage]

    serializer_class = serializers.SubscriptionRequestSerializer
    queryset = SubscriptionRequest.objects.all()
