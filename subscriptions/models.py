import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from subscriptions.topics import MAX_TOPIC_LENGTH

MAX_CALLBACK_LENGTH = 2048
# WebSub §5.1: hub.secret MUST be under 200 bytes.
MAX_SECRET_BYTES = 199


class TimeStamped(models.Model):
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class Subscription(TimeStamped):
    """A verified subscription: `callback` receives every notification on a topic matching `topic_key`."""

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"

    topic = models.CharField(max_length=MAX_TOPIC_LENGTH, help_text="hub.topic as the subscriber sent it")
    topic_key = models.CharField(
        max_length=MAX_TOPIC_LENGTH, editable=False, help_text="normalised topic used for matching"
    )
    callback = models.CharField(max_length=MAX_CALLBACK_LENGTH)
    secret = models.CharField(max_length=MAX_SECRET_BYTES, blank=True, default="")
    # A secret rotation's overlap (POST /api/subscriptions/<id>/rotate-secret): the secret replaced
    # still signs webhook-signature beside the new one until `previous_secret_expires_at`, then is erased.
    previous_secret = models.CharField(max_length=MAX_SECRET_BYTES, blank=True, default="", db_default="")
    previous_secret_expires_at = models.DateTimeField(
        null=True, blank=True, help_text="until when the secret replaced by a rotation still signs deliveries"
    )
    lease_seconds = models.PositiveIntegerField()
    expires_at = models.DateTimeField()
    verified_at = models.DateTimeField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    rate_limit = models.CharField(
        max_length=32,
        blank=True,
        default="",
        help_text='deliveries per window to this callback, like "100/10s"; empty uses HUB_CALLBACK_RATE_LIMIT',
    )
    standard_webhooks = models.BooleanField(
        default=False, help_text="also send webhook-id, webhook-timestamp and webhook-signature (standardwebhooks.com)"
    )
    # Circuit breaker: consecutive failed attempts pause the subscription; after
    # `resume_after` one delivery probes the callback, and a success resumes it.
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    last_failure_reason = models.CharField(max_length=500, blank=True, default="")
    paused_at = models.DateTimeField(null=True, blank=True)
    pause_reason = models.CharField(max_length=500, blank=True, default="")
    resume_after = models.DateTimeField(null=True, blank=True, help_text="when a paused subscription is probed")

    class Meta:
        permissions = [("manage_hub", "Can manage subscriptions and deliveries through the API")]
        constraints = [
            # Also the index spread uses: `topic_key IN (...)`.
            models.UniqueConstraint(fields=["topic_key", "callback"], name="subscription_unique_topic_callback"),
        ]
        indexes = [
            models.Index(fields=["expires_at"], name="subscription_expires_at"),
            models.Index(fields=["state"], condition=Q(state="paused"), name="subscription_paused"),
            # hub.expire_subscriptions: the previous secrets whose overlap has ended, to erase.
            models.Index(
                fields=["previous_secret_expires_at"],
                condition=Q(previous_secret_expires_at__isnull=False),
                name="subscription_rotation_ends",
            ),
        ]
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.topic} -> {self.callback}"

    @property
    def has_secret(self) -> bool:
        return bool(self.secret)


class SubscriptionRequest(TimeStamped):
    """A subscribe or unsubscribe request, kept with its outcome; only a verified one changes a subscription."""

    class Mode(models.TextChoices):
        SUBSCRIBE = "subscribe", "Subscribe"
        UNSUBSCRIBE = "unsubscribe", "Unsubscribe"

    class State(models.TextChoices):
        PENDING = "pending", "Pending verification"
        VERIFIED = "verified", "Verified"
        FAILED = "failed", "Verification failed"
        DENIED = "denied", "Denied"

    mode = models.CharField(max_length=16, choices=Mode.choices)
    topic = models.CharField(max_length=MAX_TOPIC_LENGTH)
    topic_key = models.CharField(max_length=MAX_TOPIC_LENGTH, editable=False)
    callback = models.CharField(max_length=MAX_CALLBACK_LENGTH)
    lease_seconds = models.PositiveIntegerField(null=True, blank=True)
    secret = models.CharField(max_length=MAX_SECRET_BYTES, blank=True, default="")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    reason = models.CharField(max_length=500, blank=True, default="", help_text="why it failed or was denied")
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["topic_key", "callback"], name="request_topic_callback"),
            models.Index(fields=["state", "created_at"], name="request_state_created"),
        ]
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.mode} {self.topic} -> {self.callback} ({self.state})"


class Notification(TimeStamped):
    """A message published on a topic: the exact bytes and content type every subscriber receives."""

    topic = models.CharField(max_length=MAX_TOPIC_LENGTH)
    content = models.BinaryField()
    content_type = models.CharField(max_length=255)
    spread_at = models.DateTimeField(null=True, blank=True, help_text="when every delivery was enqueued")

    class Meta:
        permissions = [("publish_notification", "Can publish notifications through the API")]
        indexes = [
            # The sweeper's lookup of notifications that never reached spread.
            models.Index(fields=["created_at"], condition=Q(spread_at__isnull=True), name="notification_unspread"),
            # Retention: where the notifications past HUB_RETENTION_DAYS end.
            models.Index(fields=["created_at"], name="notification_created"),
        ]
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.topic}"


class Delivery(TimeStamped):
    """One notification owed to one subscription: its status only moves forward from pending."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    # A statement on one delivery by id that must change it only while pending says "not settled" (status not
    # in these), never status = 'pending': that would let PostgreSQL answer it from a partial index on pending
    # rows (delivery_pending_due), which stale statistics (a large purge or fan-out, before autovacuum) make it
    # prefer to the primary key. Measured: 72 ms per outcome, scanning 71,000 index entries, instead of 0.03 ms
    # (bench/RESULTS.md, purge).
    SETTLED = (Status.DELIVERED.value, Status.FAILED.value, Status.CANCELLED.value)

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False, help_text="sent as X-Hub-Delivery")
    # No single-column index on either foreign key: the composite indexes below lead with
    # each (lookups and cascades use them), and every index is one more write for each
    # delivery spread and each outcome recorded.
    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="deliveries", db_index=False)
    # Kept when the subscription ends (unsubscribe, 410, expiry) so the record stays inspectable.
    subscription = models.ForeignKey(
        Subscription, on_delete=models.SET_NULL, null=True, blank=True, related_name="deliveries", db_index=False
    )
    callback = models.CharField(max_length=MAX_CALLBACK_LENGTH)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    # When a pending delivery should next run. The sweeper re-sends pending
    # deliveries well past it: the database, not the broker, says what is owed.
    due_at = models.DateTimeField(default=timezone.now)
    # Whether a broker message for this delivery exists (sent, possibly with a
    # short countdown). False: it waits in the database alone (a long retry wait,
    # or parked) and hub.enqueue_due sends it when due_at comes.
    queued = models.BooleanField(default=True, db_default=True)
    # 0 for the delivery spread made; n for the n-th replay of the notification to the
    # subscription (POST /api/subscriptions/<id>/replay), a new delivery with its own uuid.
    replay = models.PositiveIntegerField(
        default=0, db_default=0, help_text="0: the original delivery; n: the n-th replay of this notification"
    )

    class Meta:
        constraints = [
            # Spread's idempotence: one original (replay 0) per notification and subscription.
            models.UniqueConstraint(
                fields=["notification", "subscription", "replay"], name="delivery_unique_per_subscription_replay"
            ),
        ]
        indexes = [
            models.Index(fields=["notification", "status"], name="delivery_notification_status"),
            models.Index(fields=["subscription", "status"], name="delivery_subscription_status"),
            models.Index(fields=["subscription", "-delivered_at"], name="delivery_subscription_success"),
            models.Index(fields=["due_at"], condition=Q(status="pending"), name="delivery_pending_due"),
            # hub.enqueue_due: what waits in the database and has come due.
            models.Index(fields=["due_at"], condition=Q(status="pending", queued=False), name="delivery_waiting_due"),
            models.Index(fields=["status", "-last_attempt_at"], name="delivery_status_attempted"),
            # The admin's newest-first lists: all, by status, of a subscription, of a notification.
            models.Index(fields=["status", "-id"], name="delivery_status_recent"),
            models.Index(fields=["subscription", "-id"], name="delivery_subscription_recent"),
            models.Index(fields=["notification", "id"], name="delivery_notification_order"),
        ]
        ordering = ["-id"]
        verbose_name_plural = "deliveries"

    def __str__(self) -> str:
        return f"notification #{self.notification_id} -> {self.callback} ({self.status})"


# What a delivery's record says about its outcome, and what one attempt recorded:
# the admin and the API show these same columns.
DELIVERY_OUTCOME_FIELDS = ["status", "attempts", "last_status_code", "last_error", "last_attempt_at", "delivered_at"]
ATTEMPT_FIELDS = ["number", "started_at", "duration_ms", "status_code", "error", "response_body"]


class DeliveryAttempt(models.Model):
    """One POST of a delivery to its callback, kept for inspection (the attempt log)."""

    # Indexed by attempt_delivery_started, which leads with it.
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log", db_index=False)
    number = models.PositiveIntegerField(help_text="attempt number within the delivery's current round")
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=200, blank=True, default="", help_text="HTTP status or error class")
    response_body = models.CharField(max_length=1000, blank=True, default="", help_text="truncated")

    class Meta:
        indexes = [
            models.Index(fields=["delivery", "started_at"], name="attempt_delivery_started"),
            # Retention: attempts past HUB_ATTEMPT_RETENTION_DAYS.
            models.Index(fields=["started_at"], name="attempt_started"),
        ]
        ordering = ["started_at", "id"]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}: {self.status_code or self.error}"

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class IdempotencyKey(models.Model):
    """A publisher's Idempotency-Key and the answer its first request got: a retry with the same key gets it again.

    Unique per client (the account behind the token), so that two concurrent
    retries cannot both publish: the second INSERT waits for the first to commit
    and then conflicts.
    """

    client = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64, help_text="sha256 of the request's topic and content")
    # Not a foreign key: the answer stays the same when retention purges the notification.
    notification_id = models.BigIntegerField(help_text="the notification id the first request was answered with")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["client", "key"], name="idempotency_key_unique_per_client"),
        ]
        # The retention task's purge of expired keys.
        indexes = [models.Index(fields=["created_at"], name="idempotency_key_created")]

    def __str__(self) -> str:
        return f"{self.key} -> notification {self.notification_id}"
