"""Django's messages, their storages built only for a request that adds or reads one (websubhub/message_storage.py)."""

import pytest
from django.contrib import messages
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from websubhub.message_storage import LazyFallbackStorage

pytestmark = pytest.mark.django_db


def _through_middleware(request: HttpRequest, view) -> HttpResponse:
    """The request through SessionMiddleware and MessageMiddleware, as the hub's stack has them."""
    return SessionMiddleware(MessageMiddleware(view))(request)


def test_a_request_that_uses_no_message_builds_no_storage(client) -> None:
    response = client.get("/healthz")
    storage = response.wsgi_request._messages
    assert isinstance(storage, LazyFallbackStorage)
    assert "storages" not in storage.__dict__
    assert "messages" not in response.cookies


def test_a_message_added_in_one_request_is_read_in_the_next_and_then_gone() -> None:
    factory = RequestFactory()

    def adds(request: HttpRequest) -> HttpResponse:
        messages.success(request, "3 deliveries retried")
        return HttpResponse("added")

    read: list[list[str]] = []

    def reads(request: HttpRequest) -> HttpResponse:
        read.append([str(m) for m in messages.get_messages(request)])
        return HttpResponse("read")

    first = _through_middleware(factory.post("/admin/x"), adds)
    assert first.cookies["messages"].value  # stored in the cookie storage, signed

    second = factory.get("/admin/x")
    second.COOKIES["messages"] = first.cookies["messages"].value
    answer = _through_middleware(second, reads)
    assert read == [["3 deliveries retried"]]
    # read once: the cookie is cleared
    assert answer.cookies["messages"].value == ""

    third = factory.get("/admin/x")
    _through_middleware(third, reads)
    assert read[-1] == []
