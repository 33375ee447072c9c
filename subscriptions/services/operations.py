"""Operator actions: replay failed deliveries, end leases at once, change a subscription's settings, rotate its
secret."""

import base64
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from subscriptions import ratelimit, rules
from subscriptions.errors import HubError
from subscriptions.models import Delivery, Subscription
from subscriptions.services import queueing

# Every service module logs as "subscriptions.services", the one logger they shared
# before the package was split: log configuration and readers select that name.
logger = logging.getLogger("subscriptions.services")


def subscription_update(
    *, subscription: Subscription, rate_limit: str | None = None, standard_webhooks: bool | None = None
) -> None:
    """Set what operators may change: the subscription's own rate limit ("" for the default) and
    whether deliveries carry Standard Webhooks headers. Raises HubError on an unreadable rate."""
    fields: dict[str, object] = {}
    if rate_limit is not None:
        rate_limit = rate_limit.strip()
        if rate_limit:
            try:
                ratelimit.parse_rate(rate_limit)
            except ratelimit.InvalidRate as exc:
                raise HubError(str(exc)) from None
        fields["rate_limit"] = rate_limit
    if standard_webhooks is not None:
        fields["standard_webhooks"] = standard_webhooks
    if fields:
        Subscription.objects.filter(pk=subscription.pk).update(updated_at=timezone.now(), **fields)
        for name, value in fields.items():
            setattr(subscription, name, value)


def subscriptions_expire_now(*, subscriptions: QuerySet[Subscription]) -> int:
    """End the leases at once: they receive nothing more, and the next expiry run removes them; returns how many."""
    now = timezone.now()
    return Subscription.objects.filter(pk__in=subscriptions.values("pk")).update(expires_at=now, updated_at=now)


def deliveries_replay(deliveries: QuerySet[Delivery], *, progress: Callable[[int, int], None] | None = None) -> int:
    """Send failed deliveries again with a fresh retry budget (the dead-letter replay); returns how many.

    `progress(done, total)` is called after each batch of queueing.SPREAD_BATCH.
    """
    now = timezone.now()
    ids = list(deliveries.filter(status=Delivery.Status.FAILED).values_list("id", flat=True))
    for start in range(0, len(ids), queueing.SPREAD_BATCH):
        chunk = ids[start : start + queueing.SPREAD_BATCH]
        with transaction.atomic():
            updated = list(
                Delivery.objects.filter(pk__in=chunk, status=Delivery.Status.FAILED).values_list("id", flat=True)
            )
            Delivery.objects.filter(pk__in=updated).update(
                status=Delivery.Status.PENDING, attempts=0, due_at=now, updated_at=now
            )
            transaction.on_commit(lambda updated=updated: queueing.deliveries_enqueue(updated))
        if progress is not None:
            progress(min(start + queueing.SPREAD_BATCH, len(ids)), len(ids))
    if ids:
        logger.info("replaying %s failed deliveries", len(ids))
    return len(ids)


# Random bytes of a secret the hub makes: 32, sent as `whsec_<base64>`, the Standard Webhooks form
# (its libraries decode it; X-Hub-Signature is keyed with the whole string's UTF-8, as any secret).
GENERATED_SECRET_BYTES = 32


@dataclass(frozen=True)
class SecretRotation:
    """What a rotation did: the new secret (to show once when the hub made it) and the end of the overlap."""

    secret: str
    generated: bool
    # When the replaced secret stops signing; None when nothing was replaced (no secret before, or no grace).
    previous_secret_expires_at: datetime | None


def secret_generate() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(GENERATED_SECRET_BYTES)).decode("ascii")


def subscription_rotate_secret(
    *,
    subscription: Subscription,
    secret: str | None = None,
    grace_seconds: int = rules.ROTATION_GRACE_SECONDS_DEFAULT,
) -> SecretRotation:
    """Give the subscription a new secret (random when none is given); the one it replaces keeps signing
    `webhook-signature` beside it for `grace_seconds`, then is erased. Raises HubError when refused.

    Rotating to the secret the subscription already has changes nothing (a retried request must not
    replace the old secret's overlap with the new one's). A second rotation during an overlap ends it:
    only the current and the replaced secret ever sign. Without a secret before, there is nothing to
    keep, and the new one applies alone at once.
    """
    generated = secret is None
    if generated:
        secret = secret_generate()
    rules.rotation_secret_validate(secret)
    rules.rotation_grace_validate(grace_seconds)
    now = timezone.now()
    with transaction.atomic():
        current = (
            Subscription.objects.select_for_update()
            .filter(pk=subscription.pk)
            .values_list("secret", "previous_secret_expires_at", "expires_at")
            .first()
        )
        if current is None:
            raise HubError("the subscription no longer exists", 404)
        old, previous_expires_at, lease_ends = current
        if lease_ends <= now:
            raise HubError("the subscription's lease has ended: it receives nothing any more", 409)
        if hmac.compare_digest(old.encode("utf-8"), secret.encode("utf-8")):
            return SecretRotation(secret, generated, previous_expires_at)
        overlap = bool(old) and grace_seconds > 0
        fields = {
            "secret": secret,
            "previous_secret": old if overlap else "",
            "previous_secret_expires_at": now + timedelta(seconds=grace_seconds) if overlap else None,
        }
        Subscription.objects.filter(pk=subscription.pk).update(updated_at=now, **fields)
    for name, value in fields.items():
        setattr(subscription, name, value)
    logger.info(
        "subscription %s: secret rotated (%s); the previous one signs until %s",
        subscription.pk,
        "generated" if generated else "given",
        fields["previous_secret_expires_at"] or "never",
    )
    return SecretRotation(secret, generated, fields["previous_secret_expires_at"])


def previous_secrets_erase(*, now: datetime | None = None) -> int:
    """Erase the secrets replaced by rotations whose overlap has ended; returns how many (run with the expiry)."""
    now = now or timezone.now()
    count = Subscription.objects.filter(previous_secret_expires_at__lte=now).update(
        previous_secret="", previous_secret_expires_at=None, updated_at=now
    )
    if count:
        logger.info("erased %s previous secrets whose rotation overlap ended", count)
    return count
