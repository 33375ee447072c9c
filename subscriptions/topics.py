"""Topic rules: what a topic may be, its normalised key, and which keys match it.

Two kinds of topic live side by side:

* a URL (`http://` or `https://`), as in WebSub: it matches itself exactly;
* a dotted predicate, as in the original trade-ledger system (`UN.CEFACT.TRADE`):
  non-empty segments separated by `.`, optionally ending in `.*`. A subscription
  to `UN.CEFACT` or `UN.CEFACT.*` receives every topic whose leading whole
  segments are `UN.CEFACT`, compared case-insensitively.

A subscription stores one key; a published topic expands into the list of keys
that would receive it (one per leading run of segments), so matching is one
indexed `key IN (...)` query.
"""

import functools
import re
from urllib.parse import quote, urlsplit

MAX_TOPIC_LENGTH = 2048
WILDCARD_SUFFIX = ".*"
# The hub's own operational events are published under this dotted prefix
# (subscriptions/services/events.py), and only by the hub: a subscription to it,
# or to `hub`, receives them all.
EVENTS_PREFIX = "hub.events"
# ASCII characters that cannot appear unencoded in a URI (RFC 3986), so neither
# in the `<...>` target of a Link header: `>` and `"` would let a topic add its
# own parameters to the header (`<A>;rel="self",<B>`). Refused in any topic.
UNSAFE_LINK_CHARACTERS = frozenset('<>"{}|\\^`')
# Kept as they are when a Link target is percent-encoded: RFC 3986's reserved
# characters and `%` (a topic's own escapes stay as they were).
_LINK_TARGET_SAFE = "!#$%&'()*+,/:;=?@[]~"


class InvalidTopic(ValueError):
    """The topic breaks a rule; the message says which, for the 400 answer."""


def is_url_topic(topic: str) -> bool:
    return topic[:8].lower().startswith(("http://", "https://"))


# `\s` in a str pattern is exactly str.isspace() (Unicode whitespace), plus C0 controls and DEL.
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


def has_space_or_control(text: str) -> bool:
    """Whether text holds whitespace (str.isspace) or a control character (C0 or DEL): never valid in a topic
    or a callback."""
    return _SPACE_OR_CONTROL.search(text) is not None


def _check_common(topic: str) -> None:
    if not topic:
        raise InvalidTopic("hub.topic is empty")
    if len(topic) > MAX_TOPIC_LENGTH:
        raise InvalidTopic(f"hub.topic is longer than {MAX_TOPIC_LENGTH} characters")
    if has_space_or_control(topic):
        raise InvalidTopic("hub.topic contains whitespace or control characters")
    unsafe = sorted(UNSAFE_LINK_CHARACTERS.intersection(topic))
    if unsafe:
        shown = " ".join(unsafe)
        raise InvalidTopic(f"hub.topic contains characters that must be percent-encoded in a URL: {shown}")


def link_target(uri: str) -> str:
    """uri as it may stand between `<` and `>` in a Link header: anything a URI cannot hold unencoded,
    non-ASCII included, percent-encoded (UTF-8), so no stored value can end the target early."""
    return quote(uri, safe=_LINK_TARGET_SAFE)


def _check_url(topic: str) -> None:
    try:
        parts = urlsplit(topic)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise InvalidTopic(f"hub.topic is not a valid URL: {exc}") from None
    if not parts.hostname:
        raise InvalidTopic("hub.topic URL has no host")


def _segments(topic: str) -> list[str]:
    """The predicate's segments, without a final wildcard; raises InvalidTopic."""
    body = topic[: -len(WILDCARD_SUFFIX)] if topic.endswith(WILDCARD_SUFFIX) else topic
    if body == "*" or topic == "*":
        raise InvalidTopic("hub.topic cannot be a lone '*': subscribe to a prefix such as 'UN.CEFACT.*'")
    segments = body.split(".")
    if any(segment == "" for segment in segments):
        raise InvalidTopic("hub.topic has an empty segment (a leading, trailing or doubled '.')")
    if any("*" in segment for segment in segments):
        raise InvalidTopic("hub.topic may contain '*' only as its whole last segment, as in 'UN.CEFACT.*'")
    return segments


def _check_not_other_url(topic: str) -> None:
    if "://" in topic:
        raise InvalidTopic("hub.topic URLs must be http:// or https://")


def subscription_key(topic: str) -> str:
    """The key a subscription to `topic` is stored and matched under; raises InvalidTopic."""
    _check_common(topic)
    if is_url_topic(topic):
        _check_url(topic)
        return topic
    _check_not_other_url(topic)
    return ".".join(_segments(topic)).lower()


def publish_keys(topic: str) -> list[str]:
    """Every subscription key that receives a notification on `topic`; raises InvalidTopic.

    `UN.CEFACT.TRADE` gives `["un", "un.cefact", "un.cefact.trade"]`.
    """
    return list(_publish_keys(topic))


# A publisher publishes on few topics, each many times a second, and a publish reads its keys three times
# (the body's check, the service's, the hub.events rule): each topic's answer is worked out once per process.
# A refused topic raises every time (lru_cache keeps no exception).
@functools.lru_cache(maxsize=4096)
def _publish_keys(topic: str) -> tuple[str, ...]:
    _check_common(topic)
    if is_url_topic(topic):
        _check_url(topic)
        return (topic,)
    _check_not_other_url(topic)
    if topic.endswith(WILDCARD_SUFFIX) or topic == "*":
        raise InvalidTopic("a published topic names one topic: it cannot end in '.*'")
    segments = [segment.lower() for segment in _segments(topic)]
    return tuple(".".join(segments[: n + 1]) for n in range(len(segments)))


def matches(subscribed: str, published: str) -> bool:
    """Whether a subscription to `subscribed` receives a notification on `published`."""
    try:
        return subscription_key(subscribed) in publish_keys(published)
    except InvalidTopic:
        return False


def is_events_topic(topic: str) -> bool:
    """Whether a notification on `topic` would be an operational event: `hub.events` or under it, in any case."""
    try:
        return EVENTS_PREFIX in _publish_keys(topic)
    except InvalidTopic:
        return False


def key_receives_events(key: str) -> bool:
    """Whether a subscription stored under `key` receives operational events (`hub`, `hub.events`, `hub.events.x`)."""
    return key in publish_keys(EVENTS_PREFIX) or key.startswith(EVENTS_PREFIX + ".")
