"""Operator actions: replay failed deliveries, end leases at once, change a subscription's settings."""

import logging
from collections.abc import Callable

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from subscriptions import ratelimit
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
