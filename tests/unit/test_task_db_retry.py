"""Periodic tasks and verification retry when the database fails them, as spread and deliver do."""

from collections.abc import Callable

import pytest
from django.db import InterfaceError, OperationalError

from subscriptions import services
from tasks import periodic, verify
from tasks.retry import PERIODIC_DATABASE_RETRY


def _failing_once(exc: Exception, result: int) -> tuple[Callable[[], int], list[int]]:
    calls: list[int] = []

    def service() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise exc
        return result

    return service, calls


@pytest.mark.parametrize(
    ("task", "service_name"),
    [(periodic.sweep, "hub_sweep"), (periodic.expire_subscriptions, "subscriptions_expire")],
)
@pytest.mark.parametrize(
    "error", [OperationalError("sorry, too many clients already"), InterfaceError("connection already closed")]
)
def test_periodic_task_retries_when_the_database_fails(monkeypatch, task, service_name: str, error: Exception) -> None:
    # given: the database refuses the first run
    service, calls = _failing_once(error, 7)
    monkeypatch.setattr(services, service_name, service)
    # The expiry task also erases ended rotation overlaps: a service of its own, not under test here.
    monkeypatch.setattr(services, "previous_secrets_erase", lambda: 0)
    # when
    outcome = task.apply()
    # then: Celery retried it (at once, as apply() runs eagerly) and the second run did the work
    assert len(calls) == 2
    assert outcome.successful() and outcome.result == 7


@pytest.mark.parametrize("task", [periodic.sweep, periodic.expire_subscriptions])
def test_periodic_task_retries_are_bounded(task) -> None:
    assert task.max_retries == PERIODIC_DATABASE_RETRY["max_retries"]
    assert task.retry_backoff_max <= 60


def test_verification_retries_when_the_database_fails(monkeypatch) -> None:
    # given: the database refuses the first run
    calls: list[int] = []

    def subscription_verify(*, request_id: int) -> None:
        calls.append(request_id)
        if len(calls) == 1:
            raise OperationalError("sorry, too many clients already")

    monkeypatch.setattr(services, "subscription_verify", subscription_verify)
    # when
    outcome = verify.verify.apply(kwargs={"request_id": 42})
    # then
    assert calls == [42, 42]
    assert outcome.successful()
