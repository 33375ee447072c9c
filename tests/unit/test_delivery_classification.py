"""How a subscriber's answer to a delivery is read (delivery.classify): WebSub §7."""

import pytest

from subscriptions.delivery import Outcome, classify


@pytest.mark.parametrize("status_code", [200, 201, 202, 204, 206, 250, 299])
def test_any_2xx_answer_is_delivered(status_code):
    result = classify(status_code)
    assert result.outcome is Outcome.DELIVERED
    assert result.status_code == status_code
    assert result.error == ""


def test_2xx_answer_body_is_ignored():
    assert classify(200, "error: something went wrong").outcome is Outcome.DELIVERED
    assert classify(200, "error: something went wrong").error == ""


def test_410_answer_is_gone():
    result = classify(410)
    assert result.outcome is Outcome.GONE
    assert result.status_code == 410
    assert result.error == "410 Gone"


def test_410_answer_is_gone_whatever_its_body():
    assert classify(410, "bye").outcome is Outcome.GONE


@pytest.mark.parametrize("status_code", [300, 301, 302, 303, 304, 307, 308])
def test_3xx_answer_is_retried_not_followed(status_code):
    result = classify(status_code)
    assert result.outcome is Outcome.RETRY
    assert result.status_code == status_code


@pytest.mark.parametrize("status_code", [400, 401, 403, 404, 405, 409, 411, 413, 429, 499])
def test_4xx_answer_other_than_410_is_retried(status_code):
    assert classify(status_code).outcome is Outcome.RETRY


@pytest.mark.parametrize("status_code", [500, 502, 503, 504, 599])
def test_5xx_answer_is_retried(status_code):
    assert classify(status_code).outcome is Outcome.RETRY


@pytest.mark.parametrize("status_code", [100, 101, 199])
def test_1xx_answer_is_not_delivered(status_code):
    assert classify(status_code).outcome is Outcome.RETRY


def test_retry_error_names_the_status():
    assert classify(503).error == "HTTP 503"


def test_retry_error_includes_the_body_excerpt():
    assert classify(500, "database down").error == "HTTP 500: database down"


def test_boundaries_between_classes():
    assert classify(199).outcome is Outcome.RETRY
    assert classify(200).outcome is Outcome.DELIVERED
    assert classify(299).outcome is Outcome.DELIVERED
    assert classify(300).outcome is Outcome.RETRY
    assert classify(409).outcome is Outcome.RETRY
    assert classify(411).outcome is Outcome.RETRY
