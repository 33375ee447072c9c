"""Idempotent publish: a publisher's retry with the same Idempotency-Key gets the first answer and spreads nothing.

The key is stored in the transaction that stores the notification, under a
unique constraint per client (the account behind the token). Two concurrent
retries therefore cannot both publish: the second INSERT waits for the first
transaction and then conflicts, and its request is answered from the stored key.
Follows the IETF draft "The Idempotency-Key HTTP Header Field"
(draft-ietf-httpapi-idempotency-key-header): the same key with another payload
is refused with 422.
"""

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError
from django.db.models import QuerySet
from django.utils import timezone

from subscriptions.errors import HubError
from subscriptions.models import IdempotencyKey, Notification
from subscriptions.services import publishing

logger = logging.getLogger("subscriptions.services")

HEADER = "Idempotency-Key"
# How long a key answers with the first answer; the retention task removes older ones.
KEY_LIFETIME = timedelta(hours=24)
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class IdempotentPublish:
    """The answer to a publish with a key: the notification id, and whether it is the first request's answer."""

    notification_id: int
    replayed: bool


def idempotency_key_parse(value: str) -> str:
    """The key a header value names; HubError (400) when it is empty, too long or not printable ASCII.

    The draft defines the value as a Structured Field string ("abc"); a bare
    token (abc), as most clients send it, is read as the same key.
    """
    key = value.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if not key:
        raise HubError(f"{HEADER} is empty: send a unique value such as a UUID", field=HEADER)
    if len(key) > MAX_KEY_LENGTH:
        raise HubError(f"{HEADER} is longer than {MAX_KEY_LENGTH} characters ({len(key)})", field=HEADER)
    if not all(" " <= ch <= "~" for ch in key):
        raise HubError(f"{HEADER} must be printable ASCII", field=HEADER)
    return key


def request_fingerprint(*, topic: str, body: bytes) -> str:
    """What makes two publishes "the same request": the topic and the delivered bytes."""
    return hashlib.sha256(topic.encode("utf-8") + b"\x00" + body).hexdigest()


def notification_publish_idempotent(*, client_id: int, key: str, topic: str, content: Any) -> IdempotentPublish:
    """Publish a JSON notification once per (client, key) within KEY_LIFETIME; raises HubError when refused.

    The first request stores the notification and the key together. A repeat
    with the same topic and content gets the first notification id back
    (`replayed`); with anything else, 422. A key older than KEY_LIFETIME that
    the retention task has not removed yet counts as unused.
    """
    key = idempotency_key_parse(key)
    fingerprint = request_fingerprint(topic=topic, body=publishing.json_body(content))

    def key_record(notification: Notification) -> None:
        IdempotencyKey.objects.create(
            client_id=client_id, key=key, fingerprint=fingerprint, notification_id=notification.pk
        )

    # Twice at most: once more after removing an expired key (or one removed meanwhile).
    for _ in range(2):
        try:
            notification = publishing.notification_publish_json(topic=topic, content=content, in_transaction=key_record)
            return IdempotentPublish(notification_id=notification.pk, replayed=False)
        except IntegrityError:
            # The key exists: its transaction has committed (the unique index made this one wait).
            pass
        stored = IdempotencyKey.objects.filter(client_id=client_id, key=key).first()
        if stored is None:
            continue
        if stored.created_at <= timezone.now() - KEY_LIFETIME:
            IdempotencyKey.objects.filter(pk=stored.pk, created_at=stored.created_at).delete()
            continue
        if stored.fingerprint != fingerprint:
            raise HubError(
                f"this {HEADER} was used for a different request (another topic or content) within "
                f"{KEY_LIFETIME.total_seconds() / 3600:.0f} hours: use a new key for a new message",
                422,
                field=HEADER,
            )
        logger.info("notification %s: publish repeated with the same %s", stored.notification_id, HEADER)
        return IdempotentPublish(notification_id=stored.notification_id, replayed=True)
    raise HubError(f"this {HEADER} is being used by a request right now; try again", 409, field=HEADER)


def idempotency_keys_expired(*, now: datetime | None = None) -> QuerySet[IdempotencyKey]:
    """Keys older than KEY_LIFETIME: they answer nothing any more."""
    return IdempotencyKey.objects.filter(created_at__lte=(now or timezone.now()) - KEY_LIFETIME)


def idempotency_keys_expired_delete(*, batch: int, now: datetime | None = None) -> int:
    """Remove expired keys, `batch` rows per statement (the retention task); returns how many."""
    removed = 0
    while True:
        ids = list(idempotency_keys_expired(now=now).values_list("pk", flat=True)[:batch])
        if not ids:
            return removed
        removed += IdempotencyKey.objects.filter(pk__in=ids).delete()[0]
