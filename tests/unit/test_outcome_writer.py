"""Delivered outcomes recorded in batches by a worker's writer thread (subscriptions/services/outcome_writer.py).

The writer thread has its own database connection, so these tests commit their
rows (transaction=True) for it to see them.
"""

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone

from subscriptions import services
from subscriptions.models import Delivery, DeliveryAttempt
from subscriptions.services import delivering, outcome_writer
from tests.support.factories import DeliveryFactory, SubscriptionFactory
from tests.support.subscriber import Answer, Subscriber

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def batching(settings) -> Iterator[list[list]]:
    """The process records delivered outcomes as a worker does; yields the batches written."""
    settings.HUB_CALLBACK_RATE_LIMIT = "off"
    batches: list[list] = []

    def write(batch: list) -> None:
        batches.append(list(batch))
        delivering.outcomes_write(batch)

    outcome_writer.writer.enable(write)
    yield batches
    outcome_writer.writer.stop()


def _delivered_outcome(delivery: Delivery, *, body: str = "ok") -> outcome_writer.Outcome:
    now = timezone.now()
    row = {
        "number": delivery.attempts + 1,
        "started_at": now,
        "duration_ms": 3,
        "status_code": 200,
        "error": "",
        "response_body": body,
    }
    fields = {
        "status": Delivery.Status.DELIVERED,
        "delivered_at": now,
        "last_error": "",
        "last_status_code": 200,
        "last_attempt_at": now,
        "updated_at": now,
    }
    return delivery.pk, row, fields


def test_in_a_worker_a_delivered_attempt_is_recorded_by_the_writer_thread(
    batching: list, subscriber: Subscriber
) -> None:
    # given deliveries to a subscriber that answers 204
    subscription = SubscriptionFactory(callback=subscriber.url("/hook"))
    pending = DeliveryFactory.create_batch(5, subscription=subscription, callback=subscription.callback)
    # when each is attempted, as the deliver task does
    for delivery in pending:
        assert services.delivery_attempt(delivery_id=delivery.pk) is None
    # then once the writer has written what it was handed, every one is delivered with its attempt
    assert outcome_writer.writer.flush(timeout=30)
    assert sum(len(b) for b in batching) == 5
    rows = Delivery.objects.filter(pk__in=[d.pk for d in pending])
    assert {(r.status, r.attempts, r.last_status_code) for r in rows} == {(Delivery.Status.DELIVERED, 1, 204)}
    assert DeliveryAttempt.objects.filter(delivery__in=pending, number=1, status_code=204).count() == 5
    assert len(subscriber.deliveries("/hook")) == 5


def test_a_failed_attempt_is_still_recorded_by_its_task(batching: list, subscriber: Subscriber) -> None:
    # given a subscriber that answers 503
    subscriber.post_statuses["/down"] = [Answer(status=503)]
    delivery = DeliveryFactory(subscription=SubscriptionFactory(callback=subscriber.url("/down")))
    # when it is attempted
    resend = services.delivery_attempt(delivery_id=delivery.pk)
    # then the failure is in the database before the task goes on (its next wait depends on it)
    assert resend is not None and resend.attempted
    row = Delivery.objects.get(pk=delivery.pk)
    assert (row.status, row.attempts, row.last_status_code) == (Delivery.Status.PENDING, 1, 503)
    assert batching == []


def test_a_batch_records_every_outcome_in_one_transaction(settings) -> None:
    deliveries = DeliveryFactory.create_batch(4)
    delivering.outcomes_write([_delivered_outcome(d) for d in reversed(deliveries)])
    rows = Delivery.objects.filter(pk__in=[d.pk for d in deliveries])
    assert {r.status for r in rows} == {Delivery.Status.DELIVERED}
    assert DeliveryAttempt.objects.filter(delivery__in=deliveries).count() == 4


def test_a_row_the_database_refuses_is_recorded_bare_and_the_rest_as_they_are() -> None:
    # given a batch where one answer holds a NUL, which PostgreSQL text refuses (SQLite stores it)
    good, hostile = DeliveryFactory(), DeliveryFactory()
    delivering.outcomes_write([_delivered_outcome(good), _delivered_outcome(hostile, body="a\x00b")])
    # then both are delivered; the refused answer's attempt is recorded without what was said
    assert set(Delivery.objects.values_list("status", flat=True)) == {Delivery.Status.DELIVERED}
    assert DeliveryAttempt.objects.get(delivery=good).response_body == "ok"
    assert DeliveryAttempt.objects.get(delivery=hostile).response_body in ("", "a\x00b")


def test_a_delivery_deleted_during_its_attempt_does_not_stop_the_others_being_recorded() -> None:
    kept, deleted = DeliveryFactory(), DeliveryFactory()
    outcomes = [_delivered_outcome(kept), _delivered_outcome(deleted)]
    Delivery.objects.filter(pk=deleted.pk).delete()
    delivering.outcomes_write(outcomes)
    assert Delivery.objects.get(pk=kept.pk).status == Delivery.Status.DELIVERED
    assert DeliveryAttempt.objects.filter(delivery_id=deleted.pk).count() == 0


def test_a_batch_the_database_could_not_take_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a database that refuses the first try as unreachable
    monkeypatch.setattr(outcome_writer, "RETRY_FIRST_SECONDS", 0.01)
    tries = []

    def flaky(batch: list) -> None:
        tries.append(len(batch))
        if len(tries) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        delivering.outcomes_write(batch)

    delivery = DeliveryFactory()
    outcome_writer.writer.enable(flaky)
    try:
        assert outcome_writer.writer.submit(_delivered_outcome(delivery))
        assert outcome_writer.writer.flush(timeout=30)
    finally:
        outcome_writer.writer.stop()
    # then the second try recorded it
    assert tries == [1, 1]
    assert Delivery.objects.get(pk=delivery.pk).status == Delivery.Status.DELIVERED


def test_stop_records_what_is_queued_and_later_outcomes_go_back_to_their_tasks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given outcomes handed over while the writer lingers
    monkeypatch.setattr(outcome_writer.writer, "linger", 0.5)
    deliveries = DeliveryFactory.create_batch(3, due_at=timezone.now() - timedelta(seconds=1))
    outcome_writer.writer.enable(delivering.outcomes_write)
    for delivery in deliveries:
        assert outcome_writer.writer.submit(_delivered_outcome(delivery))
    # when the worker shuts down
    outcome_writer.writer.stop()
    # then they are recorded, and the writer takes no more
    assert set(Delivery.objects.values_list("status", flat=True)) == {Delivery.Status.DELIVERED}
    assert outcome_writer.writer.submit(_delivered_outcome(DeliveryFactory())) is False


def test_outside_a_worker_the_writer_takes_nothing() -> None:
    assert outcome_writer.writer.submit(_delivered_outcome(DeliveryFactory())) is False
