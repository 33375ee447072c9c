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

from subscriptions import http

SIGNATURE_ALGORITHMS = ("sha1", "sha256", "sha384", "sha512")
DELIVERY_ID_HEADER = "X-Hub-Delivery"
# How much of a failing answer's body to keep on the delivery for inspection.
ERROR_BODY_CHARS = 500
# Answers whose Retry-After header sets the earliest next attempt.
RETRY_AFTER_STATUSES = (429, 503)


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
    return f'<{hub_url}>; rel="hub", <{topic}>; rel="self"'


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
) -> dict[str, str]:
    """Headers of one delivery POST; X-Hub-Signature only when there is a secret.

    With `standard_webhooks`, also `webhook-id`, `webhook-timestamp` and (with a
    secret) `webhook-signature`, for subscribers that verify that format.
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
            out["webhook-signature"] = standard_webhooks_signature(secret, delivery_id, sent_at, body)
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


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """A Retry-After header (delay in seconds or an HTTP date) as seconds from now; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def classify(status_code: int, body_excerpt: str = "", retry_after: str | None = None) -> Result:
    """Any 2xx is delivered; 410 is gone; anything else (3xx included) is retried, after Retry-After on 429/503."""
    if 200 <= status_code < 300:
        return Result(Outcome.DELIVERED, status_code)
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
        response = http.session().post(
            callback, data=body, headers=request_headers, timeout=http.timeout(), allow_redirects=False, stream=True
        )
    except requests.RequestException as exc:
        return Result(Outcome.RETRY, None, http.describe_error(exc))
    with response:
        # Read a little of any answer: the excerpt of a failure is kept, and a
        # small success body is drained so the connection can be reused.
        excerpt = _excerpt(response)
        if 200 <= response.status_code < 300:
            excerpt = ""
        return classify(response.status_code, excerpt, response.headers.get("Retry-After"))


def _excerpt(response: requests.Response) -> str:
    try:
        chunk = next(response.iter_content(ERROR_BODY_CHARS * 4), b"")
    except requests.RequestException:
        return ""
    return chunk.decode("utf-8", "replace")[:ERROR_BODY_CHARS].strip()
