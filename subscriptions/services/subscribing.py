"""Subscribing: (un)subscribe requests, their verification with the subscriber, leases and expiry."""

import logging
from datetime import timedelta

from django.db import connections, transaction
from django.db.models import Count
from django.utils import timezone

from subscriptions import metrics, rules, verification
from subscriptions.errors import HubError
from subscriptions.models import Delivery, Subscription, SubscriptionRequest
from subscriptions.services import events
from websubhub.celery import app as celery_app
from websubhub.db import connection_release
from websubhub.queues import TaskName

# Every service module logs as "subscriptions.services", the one logger they shared
# before the package was split: log configuration and readers select that name.
logger = logging.getLogger("subscriptions.services")

# Subscriptions removed, and their events stored, per transaction of subscriptions_expire.
EXPIRE_BATCH = 500
# What an `expired` event says of the removed subscription (never its secret).
_EXPIRED_FIELDS = ("id", "topic", "topic_key", "callback", "lease_seconds", "verified_at", "expires_at")


def subscription_request(
    *,
    mode: str,
    topic: str,
    callback: str,
    lease_seconds: int | None = None,
    secret: str = "",
    events_allowed: bool = False,
) -> SubscriptionRequest:
    """Record a (un)subscribe request and enqueue its verification; raises HubError when invalid.

    Nothing about the subscription changes here: only a verified request does.
    `events_allowed`: the caller may subscribe to topics that receive the hub's
    operational events (the JSON API, for tokens with the manage permission);
    the open /hub may not, since events name other subscriptions.
    """
    if mode not in SubscriptionRequest.Mode.values:
        raise HubError(f"hub.mode must be subscribe, unsubscribe or publish, not {mode[:40]!r}", field="hub.mode")
    topic_key = rules.topic_key_for_subscription(topic)
    if mode == SubscriptionRequest.Mode.SUBSCRIBE and not events_allowed:
        rules.topic_events_subscribe_refuse(topic_key)
    rules.callback_validate(callback)
    if mode == SubscriptionRequest.Mode.SUBSCRIBE:
        rules.secret_validate(secret)
        if lease_seconds is not None and lease_seconds <= 0:
            raise HubError("hub.lease_seconds must be a positive whole number of seconds", field="hub.lease_seconds")
    else:
        # WebSub §5.1: lease and secret mean nothing to an unsubscribe.
        lease_seconds, secret = None, ""
        if not Subscription.objects.filter(topic_key=topic_key, callback=callback).exists():
            raise HubError("there is no subscription of this callback to this topic", status=404)

    with transaction.atomic():
        request = SubscriptionRequest.objects.create(
            mode=mode,
            topic=topic,
            topic_key=topic_key,
            callback=callback,
            lease_seconds=rules.lease_clamp(lease_seconds) if mode == SubscriptionRequest.Mode.SUBSCRIBE else None,
            secret=secret,
        )
        request_id = request.pk
        transaction.on_commit(
            lambda: celery_app.send_task(TaskName.VERIFY, kwargs={"request_id": request_id}), robust=True
        )
    host = events.callback_host(callback)
    logger.info("subscription request %s: %s topic=%s callback_host=%s", request_id, mode, topic, host)
    return request


def subscription_verify(*, request_id: int) -> SubscriptionRequest | None:
    """Verify one pending request with its subscriber, then apply it; a no-op when it is no longer pending."""
    request = SubscriptionRequest.objects.filter(pk=request_id, state=SubscriptionRequest.State.PENDING).first()
    if request is None:
        return None

    if request.mode == SubscriptionRequest.Mode.SUBSCRIBE:
        reason = rules.topic_denied_reason(request.topic)
        if reason:
            connection_release()  # not held while the callback answers
            answer = verification.notify_denied(request.callback, request.topic, reason)
            _request_complete(request, SubscriptionRequest.State.DENIED, reason, answer.status_code)
            logger.info("subscription request %s denied: %s", request.pk, reason)
            return request

    challenge = verification.new_challenge()
    params = {"hub.mode": request.mode, "hub.topic": request.topic, "hub.challenge": challenge}
    if request.mode == SubscriptionRequest.Mode.SUBSCRIBE:
        params["hub.lease_seconds"] = str(request.lease_seconds)
    connection_release()  # not held while the callback answers
    answer = verification.verify(request.callback, params, challenge)

    with transaction.atomic():
        request = SubscriptionRequest.objects.select_for_update().get(pk=request.pk)
        if request.state != SubscriptionRequest.State.PENDING:
            return request
        if not answer.ok:
            _request_complete(request, SubscriptionRequest.State.FAILED, answer.reason, answer.status_code)
            events.verification_failed(request=request)
            logger.info("subscription request %s failed verification: %s", request.pk, answer.reason)
            return request
        newer = SubscriptionRequest.objects.filter(
            topic_key=request.topic_key,
            callback=request.callback,
            pk__gt=request.pk,
            state=SubscriptionRequest.State.VERIFIED,
        ).exists()
        if newer:
            # A later request for the same pair was applied first; this one must not undo it.
            _request_complete(request, SubscriptionRequest.State.FAILED, "superseded by a newer request", None)
            return request
        now = timezone.now()
        if request.mode == SubscriptionRequest.Mode.SUBSCRIBE:
            defaults = {
                "topic": request.topic,
                "secret": request.secret,
                "lease_seconds": request.lease_seconds,
                "verified_at": now,
                "expires_at": now + timedelta(seconds=request.lease_seconds),
                "state": Subscription.State.ACTIVE,
            }
            pair = Subscription.objects.select_for_update().filter(
                topic_key=request.topic_key, callback=request.callback
            )
            current_secret = pair.values_list("secret", flat=True).first()
            if current_secret is not None and current_secret != request.secret:
                # The subscriber's own new secret applies alone at once: it ends a rotation's overlap.
                # A renewal with the current secret leaves an overlap running.
                defaults.update(previous_secret="", previous_secret_expires_at=None)
            subscription, created = Subscription.objects.update_or_create(
                topic_key=request.topic_key, callback=request.callback, defaults=defaults
            )
            logger.info(
                "subscription %s %s by request %s, lease %ss",
                subscription.pk,
                "created" if created else "renewed",
                request.pk,
                request.lease_seconds,
            )
        else:
            Subscription.objects.filter(topic_key=request.topic_key, callback=request.callback).delete()
            logger.info("subscription request %s: unsubscribed", request.pk)
        _request_complete(request, SubscriptionRequest.State.VERIFIED, "", answer.status_code)
    return request


def _request_complete(request: SubscriptionRequest, state: str, reason: str, status_code: int | None) -> None:
    request.state = state
    request.reason = reason[:500]
    request.response_status = status_code
    request.completed_at = timezone.now()
    # The secret is only needed until the subscription holds it.
    request.secret = ""
    request.save(update_fields=["state", "reason", "response_status", "completed_at", "secret", "updated_at"])
    metrics.verification_outcome(state)


def subscription_delete(*, subscription: Subscription) -> None:
    """Remove a subscription at once (operator action); its pending deliveries are cancelled when next tried."""
    subscription.delete()


def subscriptions_expire(*, batch: int = EXPIRE_BATCH) -> int:
    """Remove every subscription whose lease has ended, each with its `expired` event; returns how many.

    `batch` subscriptions per transaction: their rows are locked, removed, and
    their events stored in it, so an event is never about a subscription a
    renewal kept, nor lost when the removal is.
    """
    count = 0
    while True:
        now = timezone.now()
        with transaction.atomic():
            expired = Subscription.objects.filter(expires_at__lte=now).order_by("id")
            if connections["default"].features.has_select_for_update_skip_locked:
                expired = expired.select_for_update(skip_locked=True)
            rows = list(expired.values(*_EXPIRED_FIELDS)[:batch])
            if not rows:
                break
            ids = [row["id"] for row in rows]
            pending = dict(
                Delivery.objects.filter(subscription_id__in=ids, status=Delivery.Status.PENDING)
                .values("subscription_id")
                .annotate(n=Count("id"))
                .values_list("subscription_id", "n")
            )
            Subscription.objects.filter(pk__in=ids).delete()
            for row in rows:
                events.subscription_expired(subscription=row, deliveries_pending=pending.get(row["id"], 0), now=now)
        count += len(rows)
        if len(rows) < batch:
            break
    if count:
        logger.info("expired %s subscriptions", count)
    return count
