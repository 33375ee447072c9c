"""A worker's give-backs (in-flight places, claims) sent together by one thread (ratelimit.GiveBacks), on Redis."""

import uuid
from collections.abc import Iterator

import pytest
from django.conf import settings

from subscriptions import ratelimit
from subscriptions.ratelimit import Verdict

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (REDIS_URL)")


@pytest.fixture
def batching() -> Iterator[ratelimit.GiveBacks]:
    ratelimit.give_backs.enable()
    yield ratelimit.give_backs
    ratelimit.give_backs.stop()


def _admit(delivery: str, callback: str, cap: int = 1) -> ratelimit.Admission:
    return ratelimit.attempt_admit(delivery, callback, lease=30, cap=cap, rate=None)


def test_in_a_worker_places_and_claims_are_given_back_by_the_sending_thread(batching) -> None:
    # given a callback with one place in flight, taken
    callback = f"https://give-back.example/{uuid.uuid4()}"
    delivery = str(uuid.uuid4())
    admission = _admit(delivery, callback)
    assert admission.verdict is Verdict.ADMITTED
    assert _admit(str(uuid.uuid4()), callback).verdict is Verdict.IN_FLIGHT_FULL
    # when the run gives it back, and the thread has sent what it was handed
    ratelimit.attempt_give_back(delivery, callback, admission, settled=False)
    assert batching.flush()
    # then the place is free again, and the unsettled delivery's claim is gone
    assert _admit(str(uuid.uuid4()), callback).verdict is Verdict.ADMITTED
    assert _admit(delivery, f"{callback}/other", cap=0).verdict is Verdict.ADMITTED


def test_a_settled_delivery_keeps_its_tombstone(batching) -> None:
    callback = f"https://give-back.example/{uuid.uuid4()}"
    delivery = str(uuid.uuid4())
    admission = _admit(delivery, callback, cap=0)
    ratelimit.attempt_give_back(delivery, callback, admission, settled=True)
    assert batching.flush()
    assert _admit(delivery, callback, cap=0).verdict is Verdict.BUSY


def test_give_backs_reach_a_redis_that_lost_its_scripts(batching) -> None:
    callback = f"https://give-back.example/{uuid.uuid4()}"
    delivery = str(uuid.uuid4())
    admission = _admit(delivery, callback)
    ratelimit.redis_client().script_flush()
    ratelimit.attempt_give_back(delivery, callback, admission, settled=False)
    assert batching.flush()
    assert _admit(str(uuid.uuid4()), callback).verdict is Verdict.ADMITTED


def test_outside_a_worker_the_caller_gives_back_itself() -> None:
    assert ratelimit.give_backs.submit((["k"], [1])) is False
    callback = f"https://give-back.example/{uuid.uuid4()}"
    delivery = str(uuid.uuid4())
    admission = _admit(delivery, callback)
    ratelimit.attempt_give_back(delivery, callback, admission, settled=False)
    assert _admit(str(uuid.uuid4()), callback).verdict is Verdict.ADMITTED
