"""The WebSub endpoint: `POST /hub` with a form body (subscribe, unsubscribe, publish).

Answers are short plain text, as WebSub §5.1 expects: 202 when the request is
taken, a 4xx saying what is wrong otherwise.
"""

import logging
import math
from urllib.parse import parse_qsl

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from kombu.exceptions import OperationalError

from subscriptions import netguard, services, throttles
from subscriptions.topics import is_url_topic
from websubhub.celery import app as celery_app
from websubhub.queues import TaskName

logger = logging.getLogger(__name__)

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


def _publish_allowed(topic: str) -> bool:
    """Whether HUB_PUBLISH_ALLOWED_TOPICS admits topic; ForbiddenDestination when topic cannot be read as a URL."""
    prefixes = netguard.url_prefixes(settings.HUB_PUBLISH_ALLOWED_TOPICS, setting="HUB_PUBLISH_ALLOWED_TOPICS")
    return not prefixes or netguard.url_admitted(topic, prefixes)


def _publish(request: HttpRequest, fields: dict[str, list[str]]) -> HttpResponse:
    topics = fields.get("hub.url", []) + fields.get("hub.topic", [])
    if not topics:
        raise services.HubError("hub.mode=publish needs hub.url or hub.topic")
    if len(topics) > MAX_PUBLISH_TOPICS:
        raise services.HubError(f"one publish request may name at most {MAX_PUBLISH_TOPICS} topics")
    unique = list(dict.fromkeys(topics))
    for topic in unique:
        services.topic_keys_for_publish(topic)
        if not is_url_topic(topic):
            raise services.HubError(
                "hub.mode=publish fetches the topic, so it must be an http(s) URL; "
                "publish to a dotted topic with POST /api/notifications/"
            )
        try:
            if not _publish_allowed(topic):
                raise services.HubError(
                    "this hub does not take publish pings for that topic (HUB_PUBLISH_ALLOWED_TOPICS)", status=403
                )
            netguard.check_url_with_settings(topic)
        except netguard.ForbiddenDestination as exc:
            raise services.HubError(f"hub.topic refused: {exc}") from None
    wait = throttles.publish_wait(request)
    if wait is not None:
        return _throttled(wait, "HUB_THROTTLE_PUBLISH")
    try:
        with celery_app.producer_or_acquire() as producer:
            for topic in unique:
                celery_app.send_task(TaskName.FETCH_TOPIC, kwargs={"topic": topic}, producer=producer)
    except OperationalError:
        logger.exception("publish ping for %s topic(s) could not be queued", len(unique))
        raise services.HubError("the hub cannot queue work right now; try again shortly", status=503) from None
    return _text(202, f"Accepted: the hub will fetch {len(unique)} topic(s) and notify subscribers.")


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
        f"(hub at {settings.HUB_URL}).",
    )
