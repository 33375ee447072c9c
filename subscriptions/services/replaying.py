"""Replay by time window: send a subscription every notification of a window once more, as new deliveries.

Each replayed notification gets a new delivery (a new id and X-Hub-Delivery,
`replay` one above the pair's last), and the original stays in the log. The new
deliveries take the ordinary pipeline: created as spread creates them (parked
while the subscription is paused), enqueued with queueing.deliveries_enqueue, and
sent under the rate limit with the subscription's current callback and secret.
"""

import logging
from collections.abc import Callable
from datetime import datetime

from django.db import transaction
from django.db.models import Max, Q, QuerySet
from django.utils import timezone

from subscriptions.errors import HubError
from subscriptions.models import Delivery, Notification, Subscription
from subscriptions.services import queueing, retention
from websubhub.hub_settings import hub_settings

logger = logging.getLogger("subscriptions.services")

# What a replay may select: settled deliveries (a pending one is still on its way).
REPLAYABLE = [Delivery.Status.DELIVERED, Delivery.Status.FAILED, Delivery.Status.CANCELLED]


def replay_window(*, since: datetime, until: datetime | None, now: datetime) -> datetime:
    """The window's end (at most now); HubError (400) when it is empty or starts before retention."""
    end = now if until is None or until > now else until
    if until is not None and until <= since:
        raise HubError("until must be later than since", field="until")
    start = retention.retention_window_start(now=now)
    if start is not None and since < start:
        raise HubError(
            f"since is before the retention window: with HUB_RETENTION_DAYS={hub_settings.HUB_RETENTION_DAYS}, "
            f"notifications published before {start:%Y-%m-%dT%H:%M:%SZ} may have been purged; "
            "replay from that time on",
            field="since",
        )
    return end


def replay_selection(
    *, subscription: Subscription, since: datetime, until: datetime, statuses: list[str]
) -> QuerySet[Delivery]:
    """The subscription's deliveries in those statuses of notifications published in [since, until)."""
    return Delivery.objects.filter(
        subscription_id=subscription.pk,
        status__in=statuses,
        notification__created_at__gte=since,
        notification__created_at__lt=until,
    )


def subscription_replay(
    *,
    subscription: Subscription,
    since: datetime,
    until: datetime | None = None,
    statuses: list[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Send each notification published in [since, until) that the subscription had a delivery of, in one of
    `statuses` (default: every settled one), once more; returns how many. Raises HubError when refused.

    `progress(done, total)` is called after each batch of queueing.SPREAD_BATCH.
    """
    now = timezone.now()
    end = replay_window(since=since, until=until, now=now)
    statuses = list(dict.fromkeys(statuses or REPLAYABLE))
    refused = [status for status in statuses if status not in REPLAYABLE]
    if refused:
        raise HubError(
            f"status {refused[0]!r} cannot be replayed: choose among {', '.join(REPLAYABLE)}", field="status"
        )
    if subscription.expires_at <= now:
        raise HubError("the subscription's lease has ended: it receives nothing any more", 409)
    selection = replay_selection(subscription=subscription, since=since, until=end, statuses=statuses)
    notifications = selection.order_by("notification_id").values_list("notification_id", flat=True).distinct()
    total = notifications.count() if progress is not None else 0
    replayed = 0
    cursor = 0
    while True:
        batch = list(notifications.filter(notification_id__gt=cursor)[: queueing.SPREAD_BATCH])
        if not batch:
            break
        cursor = batch[-1]
        replayed += _replay_batch(subscription.pk, batch)
        if progress is not None:
            progress(replayed, total)
    logger.info(
        "subscription %s: %s notifications of %s..%s replayed (%s)", subscription.pk, replayed, since, end, statuses
    )
    return replayed


def _replay_batch(subscription_id: int, notification_ids: list[int]) -> int:
    """New deliveries of these notifications to the subscription, enqueued on commit (parked while it is paused)."""
    now = timezone.now()
    subscription = Subscription.objects.filter(pk=subscription_id).only("callback", "state", "resume_after").first()
    if subscription is None:
        return 0
    # As spread parks: until the probe, when it is paused and the probe is not due yet.
    probe_at = subscription.resume_after
    paused = subscription.state == Subscription.State.PAUSED and probe_at is not None and probe_at > now
    parked_until = probe_at if paused else None
    with transaction.atomic():
        # Locked against the retention purge: a notification it removed meanwhile is skipped.
        present = list(
            Notification.objects.select_for_update(no_key=True)
            .filter(pk__in=notification_ids)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        last = dict(
            Delivery.objects.filter(subscription_id=subscription_id, notification_id__in=present)
            .values("notification_id")
            .annotate(last=Max("replay"))
            .values_list("notification_id", "last")
        )
        created = Delivery.objects.bulk_create(
            Delivery(
                notification_id=notification_id,
                subscription_id=subscription_id,
                callback=subscription.callback,
                replay=last.get(notification_id, -1) + 1,
                due_at=parked_until or now,
                # Parked: no message; hub.enqueue_due sends it at the probe time.
                queued=parked_until is None,
            )
            for notification_id in present
        )
        ids = [delivery.pk for delivery in created]
        if parked_until is None:
            transaction.on_commit(lambda: queueing.deliveries_enqueue(ids))
    if (
        parked_until is not None
        and not Subscription.objects.filter(pk=subscription_id, state=Subscription.State.PAUSED).exists()
    ):
        # Resumed after it was read as paused: its release may not have seen these (as in spread).
        queueing.deliveries_release(Q(pk__in=ids))
    return len(ids)
