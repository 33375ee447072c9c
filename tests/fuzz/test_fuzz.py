"""Fuzzing: schemathesis against the OpenAPI schema of the API, hypothesis against the /hub form endpoint.

Every answer must be 2xx or 4xx, match the schema, and leave no half-written rows.
"""

import json
from urllib.parse import quote, urlencode

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from subscriptions.models import Delivery, Notification, Subscription, SubscriptionRequest
from tests.support.auth import token_for
from tests.support.factories import SubscriptionFactory
from websubhub.celery import app as celery_app

pytestmark = pytest.mark.django_db


@pytest.fixture
def api_schema(db: None):
    from websubhub.wsgi import application

    # Called as a WSGI app, Django would close the test's database connection
    # after each request; its own test client disconnects these signals too.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/schema/", application)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture(autouse=True)
def no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(celery_app, "send_task", lambda *args, **kwargs: None)


@pytest.fixture
def token(db: None) -> str:
    return token_for("fuzzer", publish=True, manage=True)


def test_api_answers_every_generated_request_with_a_documented_non_5xx_answer(api_schema, token: str) -> None:
    # POST /hub (hand-described form) has its own hypothesis tests below: its
    # refusals depend on combinations of fields that a schema cannot express.
    operations = [op for op in (r.ok() for r in api_schema.get_all_operations()) if op.path != "/hub"]
    assert len(operations) >= 14
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:
            auth = {"Authorization": f"Token {token}"}
            response = case.call(headers=auth)
            assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:500])
            case.validate_response(response, headers=auth, excluded_checks=_state_dependent_refusal(response))

        check()


def _state_dependent_refusal(response) -> list:
    """Checks that do not apply to this answer: a valid publish whose Idempotency-Key an earlier generated case
    used with another body is refused with 422 by design (the IETF draft), as a 409 answers a state, not the data."""
    if response.status_code == 422 and "Idempotency-Key" in response.json().get("errors", {}):
        return [positive_data_acceptance]
    return []


# --- Text that is not valid Unicode (lone surrogates) in every JSON field ---------------------------

# Hypothesis leaves surrogates out of text by default (category Cs): ask for them.
LONE_SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
WITH_SURROGATE = st.builds(
    lambda before, lone, after: before + lone + after, st.text(max_size=10), LONE_SURROGATES, st.text(max_size=10)
)
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10))


@st.composite
def json_holding_a_surrogate(draw: st.DrawFn) -> object:
    """A JSON value, nested a few levels, with a lone surrogate in one key or string somewhere."""
    bad = draw(WITH_SURROGATE)
    value: object = bad
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            value = [*draw(st.lists(JSON_SCALARS, max_size=2)), value]
        elif draw(st.booleans()):
            value = {bad: draw(JSON_SCALARS)}
        else:
            value = {draw(st.text(max_size=5)): value}
    return value


VALID = {
    "/api/notifications/": {"topic": "a.b", "content": {"x": 1}},
    "/api/subscriptions/": {"topic": "a.b", "callback": "https://sub.example/cb", "secret": "s", "lease_seconds": 60},
    "subscription": {"rate_limit": "5/s", "standard_webhooks": True},
    "rotate-secret": {"secret": "s", "grace_seconds": 60},
}


@given(target=st.sampled_from(sorted(VALID)), data=st.data())
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_json_api_refuses_text_that_is_not_valid_unicode_in_any_field_with_a_400_naming_it(
    target: str, data: st.DataObject, token: str
) -> None:
    # given a valid request with one field replaced by a value holding a lone surrogate
    subscription = Subscription.objects.first() or SubscriptionFactory()
    document = dict(VALID[target])
    field = data.draw(st.sampled_from(sorted(document)))
    document[field] = data.draw(json_holding_a_surrogate())
    client = Client(HTTP_AUTHORIZATION=f"Token {token}")
    before = _row_counts()
    body = json.dumps(document)  # ensure_ascii: the surrogate travels as a \\u escape, as a client would send it
    if target == "subscription":
        response = client.patch(f"/api/subscriptions/{subscription.pk}/", body, content_type="application/json")
    elif target == "rotate-secret":
        url = f"/api/subscriptions/{subscription.pk}/rotate-secret"
        response = client.post(url, body, content_type="application/json")
    else:
        response = client.post(target, body, content_type="application/json")
    # then
    assert response.status_code == 400, response.content[:500]
    assert "not valid Unicode" in response.json()["errors"][field][0]
    assert _row_counts() == before


# --- /hub -----------------------------------------------------------------------------------------

FIELD_NAMES = st.sampled_from(
    ["hub.mode", "hub.topic", "hub.callback", "hub.lease_seconds", "hub.secret", "hub.url", "hub.other", ""]
)
VALUES = st.one_of(
    st.sampled_from(
        [
            "subscribe",
            "unsubscribe",
            "publish",
            "UN.CEFACT.*",
            "un..x",
            "*",
            "https://sub.example/cb",
            "http://sub.example/cb?x=1",
            "ftp://x",
            "0",
            "-1",
            "99999999999999999999",
            "\x00",
        ]
    ),
    st.text(max_size=300),
    WITH_SURROGATE,
)
FORMS = st.lists(st.tuples(FIELD_NAMES, VALUES), max_size=8)
RAW_BODIES = st.binary(max_size=600)
CONTENT_TYPES = st.sampled_from(
    [
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=UTF-8",
        "application/x-www-form-urlencoded; charset=latin-1",
        "application/json",
        "text/plain",
        "",
    ]
)


def _row_counts() -> tuple[int, int, int, int]:
    return (
        SubscriptionRequest.objects.count(),
        Subscription.objects.count(),
        Notification.objects.count(),
        Delivery.objects.count(),
    )


def _check_answer(status: int, before: tuple[int, int, int, int]) -> None:
    assert 200 <= status < 500, status
    requests_after, subscriptions_after, notifications_after, deliveries_after = _row_counts()
    # /hub only ever writes one pending request, and only with a 202.
    assert (subscriptions_after, notifications_after, deliveries_after) == before[1:]
    written = requests_after - before[0]
    # A refusal writes nothing; an accepted subscribe writes one request, a publish ping none.
    assert written in ((0, 1) if status == 202 else (0,)), (status, written)


@given(fields=FORMS, content_type=CONTENT_TYPES)
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
def test_hub_answers_arbitrary_forms_with_2xx_or_4xx_and_no_partial_writes(fields, content_type) -> None:
    before = _row_counts()
    # surrogatepass: a lone surrogate goes out as its 3 bytes (%ED%B0%80), which are not UTF-8.
    body = urlencode(fields, quote_via=quote, errors="surrogatepass")
    response = Client().post("/hub", body, content_type=content_type)
    _check_answer(response.status_code, before)
    if response.status_code >= 400:
        assert response.content.strip(), "a refusal says what was wrong"


@given(body=RAW_BODIES, content_type=CONTENT_TYPES)
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
def test_hub_answers_arbitrary_bytes_with_2xx_or_4xx_and_no_partial_writes(body, content_type) -> None:
    before = _row_counts()
    # generic() sends the bytes as they are (post() would try to encode them).
    response = Client().generic("POST", "/hub", body, content_type=content_type or "application/octet-stream")
    _check_answer(response.status_code, before)
