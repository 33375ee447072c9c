"""The API's content negotiation answers as DRF's own does, for the requests it answers early and the others."""

import pytest
from django.http import Http404
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from subscriptions.api.negotiation import HubContentNegotiation

ACCEPTS = [
    None,
    "*/*",
    "application/json",
    "application/*",
    "text/html",
    "",
    "application/json; indent=4",
    "text/html, application/json;q=0.9",
    "application/xml",
    "*/*;q=0.1",
]


def _select(negotiation: object, accept: str | None, renderers: list, query: str = "") -> object:
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    request = Request(APIRequestFactory().get(f"/api/notifications/{query}", **headers))
    try:
        renderer, media_type = negotiation.select_renderer(request, renderers)
    except (NotAcceptable, Http404) as exc:
        return type(exc)
    return type(renderer), media_type


@pytest.mark.parametrize("accept", ACCEPTS)
@pytest.mark.parametrize("query", ["", "?format=json", "?format=api"])
@pytest.mark.parametrize("renderer_classes", [[JSONRenderer], [JSONRenderer, BrowsableAPIRenderer]])
def test_the_hub_negotiation_answers_as_drfs_own(accept: str | None, query: str, renderer_classes: list) -> None:
    renderers = [cls() for cls in renderer_classes]
    assert _select(HubContentNegotiation(), accept, renderers, query) == _select(
        DefaultContentNegotiation(), accept, renderers, query
    )


def test_a_publish_that_accepts_only_html_gets_406_with_a_reason(client) -> None:
    response = client.post(
        "/api/notifications/", {"topic": "a.b", "content": 1}, content_type="application/json", HTTP_ACCEPT="text/html"
    )
    assert response.status_code == 406
    assert "Accept" in response.json()["detail"]
