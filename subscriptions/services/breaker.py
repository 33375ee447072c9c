"""The circuit breaker: pause a failing subscription, probe it after the cool-down, resume it, and park and
release the deliveries that wait for it.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from subscriptions.models import Delivery, Subscription
from subscriptions.services import events, queueing
from websubhub.hub_settings import hub_settings

# Every service module logs as "subscriptions.services", the one logger they shared
# before the package was split: log configuration and readers select that name.
logger = logging.getLogger("subscriptions.services")

# How long one probe of a paused subscription holds the claim (seconds): longer
# than an attempt can take, so a crashed probe frees it for the next delivery.
PROBE_WINDOW_SECONDS = 60


@dataclass(frozen=True)
class Breaker:
    """One subscription's circuit breaker, as a delivery run read it.

    The state lives in the subscription's row (state, consecutive_failures,
    resume_after); each method changes it with one conditional UPDATE, so runs in
    other threads and processes see one breaker.
    """

    subscription_id: int
    paused: bool
    consecutive_failures: int
    resume_after: datetime | None

    @classmethod
    def of(cls, subscription: Subscription) -> "Breaker":
        return cls(
            subscription_id=subscription.pk,
            paused=subscription.state == Subscription.State.PAUSED,
            consecutive_failures=subscription.consecutive_failures,
            resume_after=subscription.resume_after,
        )

    @property
    def failing(self) -> bool:
        return self.consecutive_failures > 0

    def probe_claim(self, now: datetime) -> bool:
        """Whether this run is the one probe of a paused subscription whose cool-down is over.

        A subscription paused by an operator has no `resume_after`: it is never
        probed, and waits for a resume.
        """
        if self.resume_after is None or self.resume_after > now:
            return False
        claimed = Subscription.objects.filter(
            pk=self.subscription_id, state=Subscription.State.PAUSED, resume_after__lte=now
        ).update(resume_after=now + timedelta(seconds=PROBE_WINDOW_SECONDS))
        return claimed == 1

    def probe_release(self) -> None:
        """Give the probe back (this run did not attempt), so the next delivery may probe."""
        Subscription.objects.filter(pk=self.subscription_id, state=Subscription.State.PAUSED).update(
            resume_after=timezone.now()
        )

    def succeeded(self, *, resumed: bool) -> None:
        """The callback answered after failures: reset the count, resume it if paused, and send what waited for it."""
        why = "the probe was delivered" if resumed else "a delivery succeeded"
        if _subscription_activate(self.subscription_id, reason=why):
            logger.info("subscription %s resumed: %s", self.subscription_id, why)
        subscription_release_parked(subscription_id=self.subscription_id)

    def failed(self, error: str, *, probing: bool, now: datetime) -> datetime | None:
        """Count a failed attempt; pause at the threshold, or stay paused after a failed probe.

        Returns the end of the cool-down when this failure paused the subscription
        (or kept it paused), else None.
        """
        cooldown = now + timedelta(seconds=hub_settings.HUB_CALLBACK_PAUSE_COOLDOWN)
        Subscription.objects.filter(pk=self.subscription_id).update(
            consecutive_failures=F("consecutive_failures") + 1,
            last_failure_at=now,
            last_failure_reason=error[:500],
            updated_at=now,
        )
        if probing:
            Subscription.objects.filter(pk=self.subscription_id).update(resume_after=cooldown)
            logger.info("subscription %s stays paused: the probe failed (%s)", self.subscription_id, error[:100])
            return cooldown
        threshold = hub_settings.HUB_CALLBACK_FAILURE_PAUSE
        if threshold <= 0:
            return None
        with transaction.atomic():
            paused = Subscription.objects.filter(
                pk=self.subscription_id, state=Subscription.State.ACTIVE, consecutive_failures__gte=threshold
            ).update(
                state=Subscription.State.PAUSED,
                paused_at=now,
                resume_after=cooldown,
                pause_reason=f"{threshold} consecutive failed delivery attempts; last: {error[:300]}",
            )
            if paused:
                events.subscription_paused(subscription_id=self.subscription_id, now=now)
                parked = _deliveries_park_all(self.subscription_id, until=cooldown)
        if paused:
            logger.warning(
                "subscription %s paused after %s consecutive failed attempts; %s deliveries parked until the probe",
                self.subscription_id,
                threshold,
                parked,
            )
            return cooldown
        return None


def _deliveries_park_all(subscription_id: int, *, until: datetime) -> int:
    """Park every pending delivery of a subscription the breaker just paused, until its probe; returns how many.

    In the pause's transaction, so a resume (which changes the subscription, then
    releases) comes after it and releases them. Their messages already in the
    broker are dropped by their runs (the row waits in the database: not queued,
    due later), instead of each run parking its own delivery: a hanging callback's
    backlog then costs one statement here and one read per message, not a write
    and a check each.
    """
    return Delivery.objects.filter(
        subscription_id=subscription_id, status=Delivery.Status.PENDING, due_at__lt=until
    ).update(due_at=until, queued=False, updated_at=timezone.now())


def subscription_pause(*, subscription: Subscription, reason: str = "paused by an operator") -> None:
    """Hold every delivery of the subscription until an operator resumes it (no probe; nothing is dropped)."""
    now = timezone.now()
    fields = {
        "state": Subscription.State.PAUSED,
        "paused_at": now,
        "pause_reason": reason[:500],
        "resume_after": None,
        "updated_at": now,
    }
    with transaction.atomic():
        # One event per pause: a subscription the breaker paused already only changes its reason.
        if Subscription.objects.filter(pk=subscription.pk, state=Subscription.State.ACTIVE).update(**fields):
            events.subscription_paused(subscription_id=subscription.pk, now=now)
        else:
            Subscription.objects.filter(pk=subscription.pk).update(**fields)


def subscription_resume(*, subscription: Subscription) -> int:
    """Resume a paused subscription at once and send its parked deliveries; returns how many."""
    _subscription_activate(subscription.pk, reason="resumed by an operator")
    return subscription_release_parked(subscription_id=subscription.pk)


def _subscription_activate(subscription_id: int, *, reason: str) -> bool:
    """Reset the failure count and make the subscription active; True (and an event) when it was paused."""
    now = timezone.now()
    fields = {"state": Subscription.State.ACTIVE, "consecutive_failures": 0, "resume_after": None, "updated_at": now}
    with transaction.atomic():
        # Conditional, so that a probe's success and an operator's resume at once say "resumed" once.
        if Subscription.objects.filter(pk=subscription_id, state=Subscription.State.PAUSED).update(**fields):
            events.subscription_resumed(subscription_id=subscription_id, reason=reason, now=now)
            return True
        Subscription.objects.filter(pk=subscription_id).update(**fields)
        return False


def subscription_release_parked(*, subscription_id: int) -> int:
    """Send every pending delivery of the subscription that waits for a later time (parked while paused).

    Callers change the subscription's state first and call this after, which is
    what `delivery_park` relies on. Rows are taken under a row lock and moved to
    now, so a delivery that releases itself at the same time (its compare-and-set
    on `due_at`) is sent once, by one of the two.
    """
    return queueing.deliveries_release(Q(subscription_id=subscription_id))


def delivery_park(delivery_id: int, *, subscription_id: int, until: datetime, holds: Q) -> bool:
    """Park a pending delivery until `until` while its subscription matches `holds`; False: send it now.

    Whatever ends the state that parks (a probe's success, an answer, a resume)
    changes the subscription first and then releases the parked deliveries. A
    delivery that read the old state and parked after that release would wait for
    its due time. So the park is written first and the subscription read after:
    either the release sees the park, or this read sees the new state, and then
    the delivery takes itself back (compare-and-set on `due_at`, so it is not
    sent twice when the release took it too) and the caller sends it now.
    """
    delivery_update(delivery_id, due_at=until, queued=False)
    if Subscription.objects.filter(holds, pk=subscription_id).exists():
        return True
    taken = Delivery.objects.filter(pk=delivery_id, status=Delivery.Status.PENDING, due_at=until).update(
        due_at=timezone.now(), queued=True, updated_at=timezone.now()
    )
    # Not taken: the release already sent it, or it is settled; either way nothing is parked.
    return not taken


def delivery_update(delivery_id: int, **fields: Any) -> None:
    # Only a pending delivery changes: a status never moves backwards ("not settled": Delivery.SETTLED).
    Delivery.objects.filter(pk=delivery_id).exclude(status__in=Delivery.SETTLED).update(
        updated_at=timezone.now(), **fields
    )
