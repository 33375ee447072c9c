"""Idempotent publish: POST /api/notifications/ with an Idempotency-Key header (services/idempotency.py)."""

import json
import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from subscriptions import services
from subscriptions.models import IdempotencyKey, Notification
from subscriptions.services import idempotency
from tests.support.auth import api_client, token_for
from websubhub.celery import app as celery_app


@pytest.fixture(autouse=True)
def sent_tasks(monkeypatch):
    sent: list[tuple[str, dict]] = []
    monkeypatch.setattr(celery_app, "send_task", lambda name, args=None, kwargs=None, **_: sent.append((name, kwargs)))
    return sent


def publish(client: Client, payload: dict, key: str | None = None):
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    return client.post("/api/notifications/", data=json.dumps(payload), content_type="application/json", **headers)


MESSAGE = {"topic": "UN.CEFACT.TRADE", "content": {"document": "CO-1"}}


@pytest.mark.django_db
def test_same_key_and_body_answers_the_first_answer_and_spreads_nothing_new(
    client, sent_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        first = publish(client, MESSAGE, key="order-42")
    with django_capture_on_commit_callbacks(execute=True):
        again = publish(client, MESSAGE, key="order-42")
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() == {"id": Notification.objects.get().pk}
    assert "Idempotent-Replayed" not in first
    assert again["Idempotent-Replayed"] == "true"
    assert [name for name, _ in sent_tasks] == ["hub.spread"]


@pytest.mark.django_db
def test_same_key_with_another_body_or_topic_is_refused_with_422_naming_the_header(client):
    publish(client, MESSAGE, key="k1")
    for changed in ({**MESSAGE, "content": {"document": "CO-2"}}, {**MESSAGE, "topic": "UN.CEFACT.OTHER"}):
        response = publish(client, changed, key="k1")
        assert response.status_code == 422, response.content
        assert "different request" in response.json()["detail"]
        assert list(response.json()["errors"]) == ["Idempotency-Key"]
    assert Notification.objects.count() == 1


@pytest.mark.django_db
def test_the_same_json_however_spaced_is_the_same_request(client):
    first = publish(client, MESSAGE, key="k2")
    body = '{ "content" : {"document":"CO-1"},\n "topic": "UN.CEFACT.TRADE" }'
    again = client.post("/api/notifications/", data=body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k2")
    assert again.status_code == 202 and again.json() == first.json()


@pytest.mark.django_db
def test_keys_belong_to_one_client():
    other = Client(HTTP_AUTHORIZATION=f"Token {token_for('other-publisher', publish=True)}")
    first = publish(api_client(), MESSAGE, key="shared-name")
    second = publish(other, MESSAGE, key="shared-name")
    assert first.status_code == second.status_code == 202
    assert first.json() != second.json()
    assert Notification.objects.count() == 2


@pytest.mark.django_db
def test_a_key_older_than_24_hours_publishes_again(client):
    first = publish(client, MESSAGE, key="old")
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=24, seconds=1))
    again = publish(client, MESSAGE, key="old")
    assert again.status_code == 202 and again.json() != first.json()
    assert "Idempotent-Replayed" not in again
    assert IdempotencyKey.objects.get().notification_id == again.json()["id"]


@pytest.mark.django_db
def test_a_quoted_structured_field_string_is_the_same_key_as_the_bare_token(client):
    first = publish(client, MESSAGE, key='"8e03978e-40d5-43e8-bc93-6894a57f9324"')
    again = publish(client, MESSAGE, key="8e03978e-40d5-43e8-bc93-6894a57f9324")
    assert again.json() == first.json()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("key", "message"), [("", "is empty"), ('""', "is empty"), ("k" * 256, "longer than 255"), ("a\tb", "printable")]
)
def test_bad_keys_are_refused_with_400_and_nothing_is_published(client, key, message):
    response = publish(client, MESSAGE, key=key)
    assert response.status_code == 400
    assert message in response.json()["errors"]["Idempotency-Key"][0]
    assert Notification.objects.count() == 0


@pytest.mark.django_db
def test_a_key_of_255_characters_is_accepted(client):
    assert publish(client, MESSAGE, key="k" * 255).status_code == 202


@pytest.mark.django_db
def test_without_the_header_the_publish_never_touches_the_key_table(client):
    with CaptureQueriesContext(connection) as queries:
        assert publish(client, MESSAGE).status_code == 202
    assert not [q for q in queries.captured_queries if IdempotencyKey._meta.db_table in q["sql"]]


@pytest.mark.django_db(transaction=True)
def test_a_concurrent_retry_waits_for_the_first_and_gets_its_answer(sent_tasks):
    """The unique constraint, not a lookup, decides: the first request's transaction is held open while the
    retry runs; the retry's INSERT waits for it and then answers with its notification, publishing nothing."""
    api_client()
    user_id = _client_id()
    inserted, release = threading.Event(), threading.Event()
    answers: dict[str, object] = {}

    def first() -> None:
        try:
            with transaction.atomic():
                answers["first"] = services.notification_publish_idempotent(client_id=user_id, key="race", **MESSAGE)
                inserted.set()
                release.wait(10)
        finally:
            connection.close()

    def retry() -> None:
        try:
            answers["retry"] = services.notification_publish_idempotent(client_id=user_id, key="race", **MESSAGE)
        finally:
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=retry)]
    threads[0].start()
    assert inserted.wait(10)
    threads[1].start()
    threads[1].join(1.0)
    assert threads[1].is_alive(), "the retry must wait for the first request's transaction"
    release.set()
    for thread in threads:
        thread.join(10)
    assert answers["first"] == services.IdempotentPublish(answers["first"].notification_id, replayed=False)
    assert answers["retry"] == services.IdempotentPublish(answers["first"].notification_id, replayed=True)
    assert Notification.objects.count() == 1
    assert [name for name, _ in sent_tasks] == ["hub.spread"]


def _client_id() -> int:
    return IdempotencyKey._meta.get_field("client").related_model.objects.get(username="test-publish-manage").pk


@pytest.mark.django_db
def test_expired_keys_are_removed_in_batches_and_live_ones_kept(client):
    for n in range(5):
        publish(client, {**MESSAGE, "content": n}, key=f"k{n}")
    IdempotencyKey.objects.filter(key__in=["k0", "k1", "k2"]).update(created_at=timezone.now() - timedelta(days=2))
    assert idempotency.idempotency_keys_expired_delete(batch=2) == 3
    assert sorted(IdempotencyKey.objects.values_list("key", flat=True)) == ["k3", "k4"]


@pytest.mark.django_db
def test_the_schema_documents_the_header_and_the_422(client):
    schema = client.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/notifications/"]["post"]
    assert "Idempotency-Key" in [p["name"] for p in operation["parameters"] if p["in"] == "header"]
    assert {"409", "422"} <= set(operation["responses"])
    assert "Idempotent-Replayed" in operation["responses"]["202"]["headers"]
