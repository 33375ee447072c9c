"""The WebSub endpoint: `POST /hub` with a form body (subscribe, unsubscribe, publish).

Answers are short plain text, as WebSub §5.1 expects: 202 when the request is
taken, a 4xx saying what is wrong otherwise.
"""

import math
from urllib.parse import parse_qsl

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from subscriptions import services, throttles
from websubhub.hub_settings import hub_settings

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
# A WebSub request has a handful of fields (a publish ping up to
# MAX_PUBLISH_TOPICS); more is abuse or a mistake.
MAX_FIELDS = 200
# Topics one publish ping may name.
MAX_PUBLISH_TOPICS = 100


def _text(status: int, message: str) -> HttpResponse:
    return HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")


def _parse_form(request: HttpRequest) -> dict[str, list[str]]:
    """The form fields, each with every value sent; raises HubError on a body that is not a UTF-8 form."""
    full_type = request.META.get("CONTENT_TYPE", "")
    if (request.content_type or "").lower() != FORM_CONTENT_TYPE:
        raise services.HubError(
            f"the request body must be {FORM_CONTENT_TYPE}, not {full_type[:100] or 'missing'}", status=415
        )
    charset = (request.content_params or {}).get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8", "us-ascii", "ascii"):
        raise services.HubError(f"the form must be encoded as UTF-8, not {charset[:40]}", status=415)
    try:
        text = request.body.decode("utf-8")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except UnicodeDecodeError:
        raise services.HubError("the form is not valid UTF-8") from None
    except ValueError:
        raise services.HubError(f"the form has more than {MAX_FIELDS} fields") from None
    fields: dict[str, list[str]] = {}
    for name, value in pairs:
        fields.setdefault(name, []).append(value)
    return fields


def _single(fields: dict[str, list[str]], name: str, *, required: bool) -> str | None:
    values = fields.get(name, [])
    if len(values) > 1:
        raise services.HubError(f"{name} was given more than once")
    if not values:
        if required:
            raise services.HubError(f"{name} is required")
        return None
    return values[0]


def _throttled(wait: float, setting: str) -> HttpResponse:
    seconds = max(1, math.ceil(wait))
    response = _text(429, f"Too many requests: try again in {seconds} seconds ({setting}).")
    response["Retry-After"] = str(seconds)
    return response


def _publish(request: HttpRequest, fields: dict[str, list[str]]) -> HttpResponse:
    topics = fields.get("hub.url", []) + fields.get("hub.topic", [])
    if not topics:
        raise services.HubError("hub.mode=publish needs hub.url or hub.topic")
    if len(topics) > MAX_PUBLISH_TOPICS:
        raise services.HubError(f"one publish request may name at most {MAX_PUBLISH_TOPICS} topics")
    ping = services.publish_ping(topics=topics, throttle=lambda: throttles.publish_wait(request))
    if ping.wait is not None:
        return _throttled(ping.wait, "HUB_THROTTLE_PUBLISH")
    return _text(202, f"Accepted: the hub will fetch {ping.topics} topic(s) and notify subscribers.")


@csrf_exempt
def hub_endpoint(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        response = _text(405, f"This is a WebSub hub: POST a {FORM_CONTENT_TYPE} request (hub.mode, hub.topic, ...).")
        response["Allow"] = "POST"
        return response
    try:
        fields = _parse_form(request)
        mode = _single(fields, "hub.mode", required=True)
        if mode == "publish":
            return _publish(request, fields)
        if mode not in ("subscribe", "unsubscribe"):
            raise services.HubError(f"hub.mode must be subscribe, unsubscribe or publish, not {mode[:40]!r}")
        topic = _single(fields, "hub.topic", required=True)
        callback = _single(fields, "hub.callback", required=True)
        lease_raw = _single(fields, "hub.lease_seconds", required=False)
        secret = _single(fields, "hub.secret", required=False) or ""
        lease_seconds = None
        if mode == "subscribe" and lease_raw not in (None, ""):
            lease_seconds = services.lease_seconds_parse(lease_raw)
        wait = throttles.subscribe_wait(request, callback)
        if wait is not None:
            return _throttled(wait, "HUB_THROTTLE_SUBSCRIBE")
        subscription_request = services.subscription_request(
            mode=mode, topic=topic, callback=callback, lease_seconds=lease_seconds, secret=secret
        )
    except services.HubError as exc:
        return _text(exc.status, exc.message)
    return _text(
        202,
        f"Accepted: {mode} request {subscription_request.pk} will be verified with the callback "
        f"(hub at {hub_settings.HUB_URL}).",
    )
