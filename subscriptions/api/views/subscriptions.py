"""The API's subscriptions: list, subscribe, read, change, unsubscribe, and the operator's actions on one
(retry its failed deliveries, replay a window, rotate its secret, pause, resume); the subscribe request's outcome.
"""

import math

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
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
from subscriptions.api.permissions import CanManage
from subscriptions.api.views.common import errors
from subscriptions.filters import ReplayWindowSerializer
from subscriptions.models import Subscription, SubscriptionRequest
from subscriptions.topics import InvalidTopic, subscription_key


def _throttled(wait: float) -> Response:
    seconds = max(1, math.ceil(wait))
    response = refusal(
        f"too many subscription requests; try again in {seconds} seconds (HUB_THROTTLE_SUBSCRIBE)",
        status.HTTP_429_TOO_MANY_REQUESTS,
    )
    response["Retry-After"] = str(seconds)
    return response


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
        tags=["subscriptions"],
        summary="A subscribe request and its verification outcome",
        responses={200: serializers.SubscriptionRequestSerializer, **errors(404)},
    )
)
class SubscriptionRequestDetail(generics.RetrieveAPIView):
    permission_classes = [CanManage]

    serializer_class = serializers.SubscriptionRequestSerializer
    queryset = SubscriptionRequest.objects.all()
