"""Subscriber-side helpers for a WebSub hub: check signatures, answer verification, read Link headers.

Standard library only, so a subscriber can copy this file or import it without
Django. Typical use in a callback handler::

    from websubhub.client import challenge_response, parse_link_header, verify_signature

    # GET: the hub verifies intent (WebSub §5.3) or tells of a denial (§5.2).
    status, body = challenge_response(query, expected_topic="UN.CEFACT", expected_mode="subscribe")

    # POST: a delivery (§7). Ignore the content unless the signature is right.
    if verify_signature(SECRET, raw_body, headers.get("X-Hub-Signature")):
        links = parse_link_header(headers.get("Link"))  # {"hub": ..., "self": <the topic>}
        handle(links.get("self"), raw_body)
    # Answer 2xx either way (§7.1 allows it), so a forger learns nothing.

    # During a secret rotation, accept the new and the old secret until the hub's grace period ends:
    verify_signature([NEW_SECRET, OLD_SECRET], raw_body, headers.get("X-Hub-Signature"))
"""

import base64
import binascii
import contextlib
import hashlib
import hmac
import time
from collections.abc import Collection, Iterable, Mapping

__all__ = [
    "SIGNATURE_ALGORITHMS",
    "challenge_response",
    "parse_link_header",
    "verify_signature",
    "verify_standard_webhook",
]

# WebSub §7.1 names these; anything else in X-Hub-Signature is refused.
SIGNATURE_ALGORITHMS = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha384": hashlib.sha384,
    "sha512": hashlib.sha512,
}
_HEX_DIGITS = frozenset("0123456789abcdef")
# The modes a hub verifies with a challenge; "denied" carries none (§5.2).
VERIFIED_MODES = ("subscribe", "unsubscribe")


Secret = str | bytes


def _keys(secret: Secret | Iterable[Secret]) -> list[bytes]:
    """One secret or several (a rotation: the new and the old one) as HMAC keys; a `str` as its UTF-8."""
    secrets = [secret] if isinstance(secret, str | bytes) else list(secret)
    return [key.encode("utf-8") if isinstance(key, str) else key for key in secrets]


def verify_signature(secret: Secret | Iterable[Secret], body: bytes, header: str | None) -> bool:
    """Whether `header` (an X-Hub-Signature value such as ``sha256=<hex>``) is the HMAC of `body` keyed with `secret`.

    `secret` may be several secrets (a list or tuple): during a secret rotation
    pass the new and the old one, and a signature made with either is accepted.
    `body` must be the exact bytes received, before any decoding. A `str`
    secret is encoded as UTF-8, as the hub does. The comparison is
    constant-time. Returns False, never raises, for a missing or empty header,
    an algorithm other than sha1/sha256/sha384/sha512, a digest that is not
    hex of the right length, or any non-ASCII character.
    """
    if not header or not header.isascii():
        return False
    algorithm, separator, digest = header.strip().partition("=")
    hash_function = SIGNATURE_ALGORITHMS.get(algorithm.strip().lower())
    if not separator or hash_function is None:
        return False
    digest = digest.strip().lower()
    if len(digest) != hash_function().digest_size * 2 or not set(digest) <= _HEX_DIGITS:
        return False
    # Every secret is tried, so the time taken does not tell which one matched.
    matched = False
    for key in _keys(secret):
        expected = hmac.new(key, body, hash_function).hexdigest()
        matched |= hmac.compare_digest(expected, digest)
    return matched


# Standard Webhooks: how old (or how far in the future) a delivery's timestamp
# may be before it is refused as a replay, in seconds.
STANDARD_WEBHOOKS_TOLERANCE = 300


def verify_standard_webhook(
    secret: str | Iterable[str],
    body: bytes,
    headers: Mapping[str, str],
    *,
    tolerance: int = STANDARD_WEBHOOKS_TOLERANCE,
    now: float | None = None,
) -> bool:
    """Check `webhook-id`/`webhook-timestamp`/`webhook-signature` (standardwebhooks.com), in constant time.

    For subscriptions where the hub operator switched Standard Webhooks on. The
    key is the secret given as hub.secret: base64-decoded when it has the
    `whsec_` prefix, else its UTF-8 bytes. `secret` may be several secrets (a
    list or tuple): any of them verifies. `webhook-signature` may hold several
    space-separated `v1,<base64>` signatures (the hub sends one per secret
    during a rotation): any one that matches suffices. Header names are matched
    without case.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    message_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature", "")
    if not message_id or not stamp.isascii() or not stamp.isdigit() or not signatures:
        return False
    if abs((time.time() if now is None else now) - int(stamp)) > tolerance:
        return False
    signed = f"{message_id}.{stamp}.".encode() + body
    expected = [
        base64.b64encode(hmac.new(_standard_webhooks_key(key), signed, hashlib.sha256).digest())
        for key in ([secret] if isinstance(secret, str) else list(secret))
    ]
    matched = False
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version != "v1" or not value.isascii():
            continue
        for digest in expected:
            matched |= hmac.compare_digest(value.encode("ascii"), digest)
    return matched


def _standard_webhooks_key(secret: str) -> bytes:
    """A Standard Webhooks secret's HMAC key: a `whsec_<base64>` secret decoded, any other as UTF-8."""
    if secret.startswith("whsec_"):
        with contextlib.suppress(binascii.Error):
            return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    return secret.encode("utf-8")


def challenge_response(
    query: Mapping[str, str | list[str]],
    *,
    expected_topic: str | None = None,
    expected_mode: str | Collection[str] = "subscribe",
) -> tuple[int, bytes]:
    """How to answer the hub's GET to the callback: ``(status, body)``.

    - ``hub.mode`` subscribe or unsubscribe, listed in `expected_mode`, with
      ``hub.topic`` equal to `expected_topic` (when given) and a
      ``hub.challenge``: ``(200, challenge)``, which confirms the request.
    - ``hub.mode=denied`` (the hub refused a subscription, §5.2): ``(200, b"")``,
      an acknowledgement; nothing was confirmed. Read ``hub.reason`` yourself.
    - Anything else (a mode you did not ask for, another topic, no challenge, a
      parameter given twice): ``(404, b"")``, so the hub does not confirm it.

    `query` is the parsed query string: ``parse_qs`` output (lists) or a plain
    mapping of strings. Only the subscriber knows which (un)subscriptions it
    asked for: pass `expected_mode` ``("subscribe", "unsubscribe")`` only while
    an unsubscribe of yours is pending, or anyone could unsubscribe you.
    """
    modes = {expected_mode} if isinstance(expected_mode, str) else set(expected_mode)
    mode = _single(query, "hub.mode")
    topic = _single(query, "hub.topic")
    if mode == "denied":
        return 200, b""
    if mode not in VERIFIED_MODES or mode not in modes or topic is None:
        return 404, b""
    if expected_topic is not None and topic != expected_topic:
        return 404, b""
    challenge = _single(query, "hub.challenge")
    if not challenge:
        return 404, b""
    return 200, challenge.encode("utf-8")


def _single(query: Mapping[str, str | list[str]], name: str) -> str | None:
    """The one value of a parameter; None when it is absent or repeated (an ambiguous request)."""
    value = query.get(name)
    if value is None or isinstance(value, str):
        return value
    values = list(value)
    return values[0] if len(values) == 1 else None


def parse_link_header(value: str | Iterable[str] | None) -> dict[str, str]:
    """The targets of a Link header (RFC 8288) by relation: ``{"hub": ..., "self": ...}``.

    Accepts one header value or several (a list, when the header was repeated).
    Relation names are lowercased; a link with ``rel="hub self"`` counts for
    both; the first link of a relation wins. Links without a ``rel`` and
    malformed parts are skipped. The targets are returned as written, not
    resolved against a base URL.
    """
    if value is None:
        return {}
    values = [value] if isinstance(value, str) else list(value)
    links: dict[str, str] = {}
    for text in values:
        for target, params in _links(text):
            for rel in params.get("rel", "").lower().split():
                links.setdefault(rel, target)
    return links


def _links(text: str) -> Iterable[tuple[str, dict[str, str]]]:
    """(target, parameters) of each `<target>; name=value; ...` link in one header value."""
    position, end = 0, len(text)
    while position < end:
        start = text.find("<", position)
        if start < 0:
            return
        close = text.find(">", start + 1)
        if close < 0:
            return
        target = text[start + 1 : close].strip()
        params, position = _link_params(text, close + 1)
        if target:
            yield target, params


def _link_params(text: str, position: int) -> tuple[dict[str, str], int]:
    """The `; name=value` parameters after a target, up to the comma that ends the link (quotes respected)."""
    params: dict[str, str] = {}
    end = len(text)
    while position < end:
        while position < end and text[position] in " \t":
            position += 1
        if position >= end:
            break
        if text[position] == ",":
            return params, position + 1
        if text[position] != ";":
            # Not a parameter: skip to the next link.
            comma = text.find(",", position)
            return params, end if comma < 0 else comma + 1
        position += 1
        name_end = position
        while name_end < end and text[name_end] not in "=;,":
            name_end += 1
        name = text[position:name_end].strip().lower()
        position = name_end
        value = ""
        if position < end and text[position] == "=":
            position += 1
            while position < end and text[position] in " \t":
                position += 1
            if position < end and text[position] == '"':
                value, position = _quoted(text, position + 1)
            else:
                value_end = position
                while value_end < end and text[value_end] not in ";,":
                    value_end += 1
                value = text[position:value_end].strip()
                position = value_end
        if name:
            params.setdefault(name, value)
    return params, position


def _quoted(text: str, position: int) -> tuple[str, int]:
    """A quoted-string's content from just after its opening quote; returns it and the index after the closing quote."""
    out: list[str] = []
    end = len(text)
    while position < end:
        char = text[position]
        if char == "\\" and position + 1 < end:
            out.append(text[position + 1])
            position += 2
            continue
        if char == '"':
            return "".join(out), position + 1
        out.append(char)
        position += 1
    return "".join(out), position
