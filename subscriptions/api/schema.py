"""Parts of the OpenAPI document that DRF cannot infer: the WebSub endpoint and the subscriber status page
(plain Django views)."""

from typing import Any

from subscriptions.api.serializers import CALLBACK_PATTERN, TOPIC_PATTERN

_FORM = "application/x-www-form-urlencoded"
_TEXT = {"text/plain": {"schema": {"type": "string"}}}


def _answer(description: str) -> dict[str, Any]:
    return {"description": description, "content": _TEXT}


WEBSUB_OPERATION: dict[str, Any] = {
    "operationId": "websub_hub",
    "tags": ["websub"],
    "summary": "WebSub: subscribe, unsubscribe, or publish (ping)",
    "description": (
        "The W3C WebSub hub endpoint (also at `/hub/`, `/subscriptions`). Open: no token. "
        "`subscribe`/`unsubscribe` answer 202 at once; the hub then verifies intent with a GET to the callback "
        "(hub.mode, hub.topic, hub.challenge, hub.lease_seconds) and applies the request only if the callback "
        "echoes the challenge with a 2xx. `publish` names topic URLs (hub.url or hub.topic, repeatable) that the "
        "hub fetches and distributes. Refusals are short plain-text explanations."
    ),
    "security": [],
    "requestBody": {
        "required": True,
        "content": {
            _FORM: {
                "schema": {
                    "type": "object",
                    "required": ["hub.mode"],
                    "properties": {
                        "hub.mode": {"type": "string", "enum": ["subscribe", "unsubscribe", "publish"]},
                        "hub.topic": {
                            "type": "string",
                            "maxLength": 2048,
                            "description": "a URL (exact match) or a dotted predicate like UN.CEFACT.* (prefix)",
                            "example": "UN.CEFACT.TRADE",
                        },
                        "hub.callback": {
                            "type": "string",
                            "format": "uri",
                            "maxLength": 2048,
                            "example": "https://subscriber.example/callback",
                        },
                        "hub.lease_seconds": {
                            "type": "integer",
                            "minimum": 1,
                            "description": "clamped to HUB_LEASE_SECONDS_MIN..MAX",
                        },
                        "hub.secret": {"type": "string", "description": "fewer than 200 bytes; signs deliveries"},
                        "hub.url": {"type": "string", "format": "uri", "description": "publish: a topic URL"},
                    },
                },
                "encoding": {"hub.url": {"explode": True}},
            }
        },
    },
    "responses": {
        "202": _answer("taken: verification (or the topic fetch) follows asynchronously"),
        "400": _answer("invalid: the text says which field and why"),
        "403": _answer(
            "publish ping for a topic outside HUB_PUBLISH_ALLOWED_TOPICS or under hub.events (the hub's own "
            "operational events); subscribe to a topic that receives hub.events (subscribe through the JSON API "
            "with a manage token)"
        ),
        "404": _answer("unsubscribe of a pair that has no subscription"),
        "413": _answer("body larger than HUB_MAX_REQUEST_BYTES"),
        "415": _answer("not application/x-www-form-urlencoded in UTF-8"),
        "429": _answer("throttled (HUB_THROTTLE_SUBSCRIBE or HUB_THROTTLE_PUBLISH); see Retry-After"),
        "503": _answer("the broker cannot take a publish ping right now"),
    },
}


_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_TIME = {**_TIME, "nullable": True}
_REFUSAL = {
    "type": "object",
    "properties": {
        "detail": {"type": "string"},
        "errors": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
    },
}


def _status_answer(description: str) -> dict[str, Any]:
    return {"description": description, "content": {**_TEXT, "application/json": {"schema": _REFUSAL}}}


STATUS_OPERATION: dict[str, Any] = {
    "operationId": "websub_subscription_status",
    "tags": ["websub"],
    "summary": "A subscriber's own subscription status (open, throttled like subscribe)",
    "description": (
        "The subscription of hub.callback to hub.topic: state, lease expiry, last successful delivery, last "
        "failure (time, status code) and the number of deliveries waiting. Never content, secrets or other "
        "subscribers. HTML by default, JSON with `Accept: application/json`."
    ),
    "parameters": [
        {
            "name": "hub.callback",
            "in": "query",
            "required": True,
            "schema": {"type": "string", "maxLength": 2048, "pattern": CALLBACK_PATTERN},
        },
        {
            "name": "hub.topic",
            "in": "query",
            "required": True,
            "schema": {"type": "string", "maxLength": 2048, "pattern": TOPIC_PATTERN},
        },
    ],
    "responses": {
        "200": {
            "description": "the subscription's status",
            "content": {
                "text/html": {"schema": {"type": "string"}},
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "topic": {"type": "string"},
                            "callback": {"type": "string"},
                            "state": {"type": "string", "enum": ["active", "paused", "expired"]},
                            "paused_at": _NULLABLE_TIME,
                            "lease_expires_at": _TIME,
                            "last_delivered_at": _NULLABLE_TIME,
                            "last_failure_at": _NULLABLE_TIME,
                            "last_failure_status_code": {"type": "integer", "nullable": True},
                            "last_failure_error": {"type": "string"},
                            "deliveries_waiting": {"type": "integer"},
                            "deliveries_waiting_capped": {"type": "boolean"},
                        },
                    }
                },
            },
        },
        "400": _status_answer("hub.callback or hub.topic missing, repeated or invalid; the body says which"),
        "404": _status_answer("no subscription of this callback to this topic"),
        "429": _status_answer("throttled (HUB_THROTTLE_SUBSCRIBE); see Retry-After"),
    },
}


def add_websub_endpoint(result: dict[str, Any], generator: object, request: object, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: describe POST /hub and GET /hub/status by hand."""
    result.setdefault("paths", {})["/hub"] = {"post": WEBSUB_OPERATION}
    result["paths"]["/hub/status"] = {"get": STATUS_OPERATION}
    tags = result.setdefault("tags", [])
    if not any(tag.get("name") == "websub" for tag in tags):
        tags.append({"name": "websub", "description": "The WebSub endpoint (W3C Recommendation)"})
    return result
