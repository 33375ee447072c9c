import uuid

from django.db import models
from django.db.models import Q

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
    lease_seconds = models.PositiveIntegerField()
    expires_at = models.DateTimeField()
    verified_at = models.DateTimeField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)

    class Meta:
        constraints = [
            # Also the index spread uses: `topic_key IN (...)`.
            models.UniqueConstraint(fields=["topic_key", "callback"], name="subscription_unique_topic_callback"),
        ]
        indexes = [models.Index(fields=["expires_at"], name="subscription_expires_at")]
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
        indexes = [
            # The sweeper's lookup of notifications that never reached spread.
            models.Index(fields=["created_at"], condition=Q(spread_at__isnull=True), name="notification_unspread"),
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

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False, help_text="sent as X-Hub-Delivery")
    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="deliveries")
    # Kept when the subscription ends (unsubscribe, 410, expiry) so the record stays inspectable.
    subscription = models.ForeignKey(
        Subscription, on_delete=models.SET_NULL, null=True, blank=True, related_name="deliveries"
    )
    callback = models.CharField(max_length=MAX_CALLBACK_LENGTH)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["notification", "subscription"], name="delivery_unique_per_subscription"),
        ]
        indexes = [
            models.Index(fields=["notification", "status"], name="delivery_notification_status"),
            models.Index(fields=["subscription", "status"], name="delivery_subscription_status"),
            models.Index(fields=["status", "created_at"], name="delivery_status_created"),
        ]
        ordering = ["-id"]
        verbose_name_plural = "deliveries"

    def __str__(self) -> str:
        return f"notification #{self.notification_id} -> {self.callback} ({self.status})"
