"""examples/subscriber.py end to end: subscribed through POST /hub, verified by the worker, sent a signed delivery."""

import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.test import Client

from subscriptions import delivery
from subscriptions.models import Subscription, SubscriptionRequest
from tests.support.auth import api_client
from tests.support.subscriber import wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "subscriber.py"
SECRET = "example-s3cret"
TOPIC = "UN.CEFACT"


def publish(topic: str, content: object) -> int:
    """Publish through the JSON API as a publisher would; the one place that knows how the API authenticates."""
    response = api_client(publish=True, manage=False).post(
        "/api/notifications/", {"topic": topic, "content": content}, content_type="application/json"
    )
    assert response.status_code == 202, response.content
    return response.json()["id"]


class ExampleSubscriber:
    """examples/subscriber.py in a subprocess, its stdout captured in a file."""

    def __init__(self, log_dir: Path, *args: str, port: int = 0) -> None:
        self.out_path = log_dir / f"subscriber-{port}-{len(list(log_dir.glob('subscriber-*.out')))}.out"
        self.err_path = self.out_path.with_suffix(".err")
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, str(EXAMPLE), "--port", str(port), *args], stdout=out, stderr=err, cwd=log_dir
            )
        first = wait_until(lambda: self._listening(), timeout=15, what="the example subscriber to listen")
        self.url = first.removeprefix("listening on ")

    def _listening(self) -> str | None:
        if self.process.poll() is not None:
            raise AssertionError(f"the example subscriber exited:\n{self.err_path.read_text()}")
        return next((line for line in self.lines() if line.startswith("listening on ")), None)

    def lines(self) -> list[str]:
        return self.out_path.read_text(encoding="utf-8").splitlines()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def example_subscriber(tmp_path: Path) -> Iterator[ExampleSubscriber]:
    server = ExampleSubscriber(tmp_path, "--secret", SECRET, "--topic", TOPIC)
    yield server
    server.stop()


def _request_to_hub(client: Client, **fields: str) -> SubscriptionRequest:
    """POST /hub a (un)subscribe request and wait for the worker to verify it."""
    body = urlencode({f"hub.{name}": value for name, value in fields.items()})
    response = client.post("/hub", body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 202, response.content
    pk = SubscriptionRequest.objects.latest("pk").pk
    done = SubscriptionRequest.objects.exclude(state=SubscriptionRequest.State.PENDING).filter(pk=pk)
    return wait_until(done.first, what=f"the verification of request {pk}")


def test_example_subscriber_confirms_its_subscription_and_prints_the_verified_delivery(
    hub, example_subscriber: ExampleSubscriber
) -> None:
    # given: the example subscribed through the WebSub endpoint, verified by the real worker
    callback = example_subscriber.url + "websub"
    request = _request_to_hub(api_client(), mode="subscribe", topic=TOPIC, callback=callback, secret=SECRET)
    assert request.state == SubscriptionRequest.State.VERIFIED, request.reason
    assert Subscription.objects.filter(callback=callback, topic=TOPIC).exists()
    assert f"verification subscribe {TOPIC}: confirmed" in example_subscriber.lines()
    # when
    publish("UN.CEFACT.TRADE.CO", {"id": 42, "status": "issued"})
    # then
    line = wait_until(
        lambda: next((line for line in example_subscriber.lines() if line.startswith("delivery ")), None),
        what="the example subscriber to print the delivery",
    )
    assert " on UN.CEFACT.TRADE.CO (application/json, 27 bytes) verified: " in line
    assert line.endswith('verified: {"id":42,"status":"issued"}')


def test_example_subscriber_refuses_to_confirm_another_topic(hub, example_subscriber: ExampleSubscriber) -> None:
    # given the example expects only UN.CEFACT
    callback = example_subscriber.url + "websub"
    # when
    request = _request_to_hub(api_client(), mode="subscribe", topic="OTHER.TOPIC", callback=callback)
    # then
    assert request.state == SubscriptionRequest.State.FAILED
    assert "HTTP 404" in request.reason
    assert not Subscription.objects.exists()
    assert "verification subscribe OTHER.TOPIC: refused" in example_subscriber.lines()


def test_example_subscriber_acknowledges_a_forged_delivery_and_ignores_it(example_subscriber: ExampleSubscriber):
    # given a POST that did not come from the hub: a signature made with another secret
    body = b'{"forged":true}'
    request = urllib.request.Request(
        example_subscriber.url + "websub",
        data=body,
        headers={"Content-Type": "application/json", "X-Hub-Signature": delivery.signature("guess", body, "sha256")},
    )
    # when
    with urllib.request.urlopen(request, timeout=5) as answer:
        status = answer.status
    # then: a 2xx (WebSub §7.1 allows it), and the content is not printed
    assert status == 202
    line = wait_until(lambda: next((x for x in example_subscriber.lines() if x.startswith("delivery ")), None))
    assert line.endswith("ignored: missing or wrong X-Hub-Signature")
    assert "forged" not in "\n".join(example_subscriber.lines())


def test_example_subscriber_given_two_secrets_verifies_a_delivery_signed_with_either(tmp_path: Path) -> None:
    # given the example started during a secret rotation with the new and the old secret
    server = ExampleSubscriber(tmp_path, "--secret", "n3w", "--secret", SECRET)
    try:
        # when deliveries signed with each, and one with neither, arrive
        for number, secret in enumerate(("n3w", SECRET, "guess")):
            body = f'{{"n":{number}}}'.encode()
            signature = delivery.signature(secret, body, "sha256")
            request = urllib.request.Request(
                server.url + "cb", data=body, headers={"Content-Type": "application/json", "X-Hub-Signature": signature}
            )
            with urllib.request.urlopen(request, timeout=5) as answer:
                assert answer.status == 202
        # then the first two are verified and the third ignored
        lines = wait_until(lambda: [x for x in server.lines() if x.startswith("delivery ")][2:] and server.lines())
    finally:
        server.stop()
    outcomes = [line.rsplit(": ", 1)[0].rsplit(" ", 1)[-1] for line in lines if line.startswith("delivery ")]
    assert outcomes == ["verified", "verified", "ignored"], lines


def test_walkthrough_unsubscribe_step_works_as_written(hub, example_subscriber: ExampleSubscriber, tmp_path: Path):
    # given a verified subscription of the example subscriber (README walkthrough, step 2)
    callback = example_subscriber.url + "cb"
    port = int(example_subscriber.url.rstrip("/").rsplit(":", 1)[1])
    request = _request_to_hub(api_client(), mode="subscribe", topic=TOPIC, callback=callback, secret=SECRET)
    assert request.state == SubscriptionRequest.State.VERIFIED, request.reason
    # when, as step 7 says: stop it, start it again on the same port with the same secret and
    # --accept-unsubscribe, then unsubscribe
    example_subscriber.stop()
    again = ExampleSubscriber(tmp_path, "--secret", SECRET, "--accept-unsubscribe", port=port)
    try:
        assert again.url == example_subscriber.url
        unsubscribe = _request_to_hub(api_client(), mode="unsubscribe", topic=TOPIC, callback=callback)
        # then the request is verified, the subscription is gone, and the subscriber printed the line the README shows
        assert unsubscribe.state == SubscriptionRequest.State.VERIFIED, unsubscribe.reason
        assert unsubscribe.response_status == 200
        assert not Subscription.objects.filter(callback=callback).exists()
        assert f"verification unsubscribe {TOPIC}: confirmed" in again.lines()
    finally:
        again.stop()


def test_unsubscribe_without_accept_unsubscribe_fails_with_the_reason_the_readme_gives(
    hub, example_subscriber: ExampleSubscriber
) -> None:
    callback = example_subscriber.url + "cb"
    _request_to_hub(api_client(), mode="subscribe", topic=TOPIC, callback=callback, secret=SECRET)
    unsubscribe = _request_to_hub(api_client(), mode="unsubscribe", topic=TOPIC, callback=callback)
    assert unsubscribe.state == SubscriptionRequest.State.FAILED
    assert "HTTP 404" in unsubscribe.reason
    assert Subscription.objects.filter(callback=callback).exists()
