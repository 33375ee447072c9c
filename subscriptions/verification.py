"""Verification of intent (WebSub §5.3) and denial (§5.2): pure HTTP, no ORM."""

import secrets
from dataclasses import dataclass
from urllib.parse import urlencode

import requests

from subscriptions import http

# Bytes of the answer read: a challenge is short, the rest is not needed.
MAX_CHALLENGE_ANSWER_BYTES = 4096


@dataclass(frozen=True)
class Answer:
    ok: bool
    status_code: int | None
    reason: str


def new_challenge() -> str:
    return secrets.token_urlsafe(32)


def callback_url(callback: str, params: dict[str, str]) -> str:
    """The callback with the hub's parameters appended, keeping its own query string as it is."""
    base = callback.split("#", 1)[0]
    separator = "&" if "?" in base else "?"
    if base.endswith(("?", "&")):
        separator = ""
    return base + separator + urlencode(params)


def verify(callback: str, params: dict[str, str], challenge: str) -> Answer:
    """GET the callback; verified only on a 2xx whose body is exactly the challenge."""
    try:
        reply = http.request(
            "GET", callback_url(callback, params), body_limit=MAX_CHALLENGE_ANSWER_BYTES, allow_redirects=False
        )
    except requests.RequestException as exc:
        return Answer(False, None, http.describe_error(exc))
    if not 200 <= reply.status_code < 300:
        return Answer(False, reply.status_code, f"callback answered HTTP {reply.status_code}")
    if reply.truncated or reply.body != challenge.encode("ascii"):
        return Answer(False, reply.status_code, "callback did not echo hub.challenge")
    return Answer(True, reply.status_code, "")


def notify_denied(callback: str, topic: str, reason: str) -> Answer:
    """Tell the subscriber its subscription was denied (`hub.mode=denied`); the answer is informative only."""
    params = {"hub.mode": "denied", "hub.topic": topic, "hub.reason": reason}
    try:
        # The answer's body means nothing here: none of it is read.
        reply = http.request("GET", callback_url(callback, params), body_limit=0, allow_redirects=False)
    except requests.RequestException as exc:
        return Answer(False, None, http.describe_error(exc))
    return Answer(200 <= reply.status_code < 300, reply.status_code, "")
