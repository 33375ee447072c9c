"""What a delivery sends and how its answer is read (WebSub §7): pure HTTP, no ORM."""

import base64
import binascii
import enum
import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import requests

from subscriptions import http, topics

SIGNATURE_ALGORITHMS = ("sha1", "sha256", "sha384", "sha512")
DELIVERY_ID_HEADER = "X-Hub-Delivery"
# How much of a failing answer's body to keep on the delivery for inspection.
ERROR_BODY_CHARS = 500
# Answers whose Retry-After header sets the earliest next attempt.
RETRY_AFTER_STATUSES = (429, 503)
# Longest Retry-After read as such (a year): anything longer says "much later",
# and HUB_RETRY_AFTER_MAX caps it further; a subscriber's 400-digit value must
# not overflow a float or a timedelta.
RETRY_AFTER_CEILING_SECONDS = 366 * 24 * 3600
# Control characters of an answer's body shown as U+FFFD: PostgreSQL text
# cannot hold NUL, and the others garble logs and the admin (tab and newlines stay).
_UNSTORABLE = {code: "\ufffd" for code in (*range(0x20), 0x7F) if chr(code) not in "\t\n\r"}


def signature(secret: str, body: bytes, algorithm: str) -> str:
    """The X-Hub-Signature value: `<algorithm>=<lowercase hex HMAC of body>`."""
    if algorithm not in SIGNATURE_ALGORITHMS:
        raise ValueError(f"unsupported signature algorithm {algorithm!r}")
    digest = hmac.new(secret.encode("utf-8"), body, getattr(hashlib, algorithm)).hexdigest()
    return f"{algorithm}={digest}"


def signature_valid(secret: str, body: bytes, header: str) -> bool:
    """Whether an X-Hub-Signature header is right for body (constant-time)."""
    algorithm, _, _ = header.partition("=")
    if algorithm not in SIGNATURE_ALGORITHMS:
        return False
    # Compare bytes: compare_digest raises TypeError on a str with non-ASCII characters.
    return hmac.compare_digest(signature(secret, body, algorithm).encode("ascii"), header.encode("utf-8"))


def link_header(hub_url: str, topic: str) -> str:
    """`Link` of a delivery; the targets are percent-encoded, so a topic stored before the rules
    refused `>` and `"` still cannot add parameters or links of its own."""
    return f'<{topics.link_target(hub_url)}>; rel="hub", <{topics.link_target(topic)}>; rel="self"'


def standard_webhooks_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks signature: a `whsec_<base64>` secret decoded, any other as UTF-8."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except binascii.Error:
            pass
    return secret.encode("utf-8")


def standard_webhooks_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """`webhook-signature` of the Standard Webhooks spec: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(standard_webhooks_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def secret_in_grace(previous_secret: str, expires_at: datetime | None, *, now: datetime) -> str:
    """The secret a rotation replaced while its overlap lasts, else "": an expired one never signs."""
    if previous_secret and expires_at is not None and expires_at > now:
        return previous_secret
    return ""


def headers(
    *,
    content_type: str,
    hub_url: str,
    topic: str,
    delivery_id: str,
    body: bytes,
    secret: str,
    algorithm: str,
    standard_webhooks: bool = False,
    timestamp: int | None = None,
    previous_secret: str = "",
) -> dict[str, str]:
    """Headers of one delivery POST; X-Hub-Signature only when there is a secret.

    With `standard_webhooks`, also `webhook-id`, `webhook-timestamp` and (with a
    secret) `webhook-signature`, for subscribers that verify that format.

    `previous_secret`: the secret a rotation replaced, during its overlap (see
    secret_in_grace). `webhook-signature` takes a space-separated list, so it
    carries a signature with each secret, the new one first; `X-Hub-Signature`
    takes one, made with the new secret. It never signs alone.
    """
    out = {
        "Content-Type": content_type,
        "Link": link_header(hub_url, topic),
        DELIVERY_ID_HEADER: delivery_id,
    }
    if secret:
        out["X-Hub-Signature"] = signature(secret, body, algorithm)
    if standard_webhooks:
        sent_at = int(time.time()) if timestamp is None else timestamp
        out["webhook-id"] = delivery_id
        out["webhook-timestamp"] = str(sent_at)
        if secret:
            keys = [secret] if not previous_secret or previous_secret == secret else [secret, previous_secret]
            out["webhook-signature"] = " ".join(
                standard_webhooks_signature(key, delivery_id, sent_at, body) for key in keys
            )
    return out


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    GONE = "gone"  # 410: the subscriber asks to end the subscription
    RETRY = "retry"


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    status_code: int | None = None
    error: str = ""
    # A failing answer's body, truncated, for the attempt log.
    body: str = ""
    # Seconds the subscriber asked us to wait (Retry-After on 429 or 503).
    retry_after: float | None = None


def storable_text(raw: str | bytes, limit: int) -> str:
    """At most `limit` characters of an answer's text, safe to store and log whatever the peer sent."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    # Lone surrogates (only from a str caller) cannot be encoded for the database either.
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text[:limit].translate(_UNSTORABLE).strip()


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """A Retry-After header (delay in seconds or an HTTP date) as seconds from now, at most a year.

    None when absent or unreadable: a header the subscriber got wrong is no reason to fail the attempt's record.
    """
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        # Compare digits before int(): a huge value overflows float() and int() refuses over 4300 digits.
        digits = value.lstrip("0") or "0"
        if len(digits) > len(str(RETRY_AFTER_CEILING_SECONDS)):
            return float(RETRY_AFTER_CEILING_SECONDS)
        return float(min(int(digits), RETRY_AFTER_CEILING_SECONDS))
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(max(0.0, seconds), float(RETRY_AFTER_CEILING_SECONDS))


def classify(status_code: int, body_excerpt: str = "", retry_after: str | None = None) -> Result:
    """Any 2xx is delivered; 410 is gone; anything else (3xx included) is retried, after Retry-After on 429/503."""
    if 200 <= status_code < 300:
        return Result(Outcome.DELIVERED, status_code)
    body_excerpt = storable_text(body_excerpt, ERROR_BODY_CHARS)
    if status_code == 410:
        return Result(Outcome.GONE, status_code, "410 Gone", body_excerpt)
    error = f"HTTP {status_code}"
    if body_excerpt:
        error = f"{error}: {body_excerpt}"
    wait = retry_after_seconds(retry_after) if status_code in RETRY_AFTER_STATUSES else None
    return Result(Outcome.RETRY, status_code, error, body_excerpt, wait)


def post(callback: str, body: bytes, request_headers: dict[str, str]) -> Result:
    """POST body to the exact callback URL; redirects are not followed (a 3xx is a failure)."""
    try:
        # A little of any answer is read: the excerpt of a failure is kept, and a
        # small success body is drained so the connection can be reused.
        reply = http.request(
            "POST",
            callback,
            data=body,
            headers=request_headers,
            allow_redirects=False,
            body_limit=ERROR_BODY_CHARS * 4,
        )
    except requests.RequestException as exc:
        return Result(Outcome.RETRY, None, http.describe_error(exc))
    excerpt = "" if 200 <= reply.status_code < 300 else storable_text(reply.body, ERROR_BODY_CHARS)
    return classify(reply.status_code, excerpt, reply.headers.get("Retry-After"))
