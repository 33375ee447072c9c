"""The operators' commands: hub_publish, hub_subscriptions, hub_expire, hub_retry_failed (nothing reaches a broker)."""

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from subscriptions.models import Delivery, Notification, Subscription
from tests.support.factories import DeliveryFactory, SubscriptionFactory
from websubhub.celery import app as celery_app

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Every task the code under test sends, instead of sending it."""
    calls: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(celery_app, "send_task", lambda name, kwargs=None, **_: calls.append((name, kwargs or {})))
    return calls


def run(*args: str, **options: Any) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


# --- hub_publish -------------------------------------------------------------------------------


def test_publish_json_stores_compact_json_prints_the_id_and_sends_spread_after_commit(
    sent, django_capture_on_commit_callbacks
) -> None:
    # when
    with django_capture_on_commit_callbacks(execute=True):
        out, _ = run("hub_publish", "UN.CEFACT.TRADE", "--json", '{"id": 42, "note": "é"}')
    # then
    notification = Notification.objects.get()
    assert out == f"{notification.pk}\n"
    assert bytes(notification.content) == '{"id":42,"note":"é"}'.encode()
    assert notification.content_type == "application/json"
    assert sent == [("hub.spread", {"notification_id": notification.pk})]


def test_publish_file_sends_its_exact_bytes_with_the_given_content_type(sent, tmp_path: Path) -> None:
    path = tmp_path / "feed.xml"
    path.write_bytes(b"<feed>\r\n\x00\xff</feed>")
    out, _ = run("hub_publish", "https://example.com/feed", "--file", str(path), "--content-type", "application/xml")
    notification = Notification.objects.get(pk=int(out))
    assert bytes(notification.content) == b"<feed>\r\n\x00\xff</feed>"
    assert notification.content_type == "application/xml"
    assert notification.topic == "https://example.com/feed"


def test_publish_file_without_content_type_is_octet_stream(sent, tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_bytes(b"{}")
    out, _ = run("hub_publish", "orders", "--file", str(path))
    assert Notification.objects.get(pk=int(out)).content_type == "application/octet-stream"


def test_publish_file_dash_reads_stdin_as_bytes(sent) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b"line one\n\xe2\x82\xac"), encoding="utf-8")
    out, _ = run(
        "hub_publish", "orders.created", "--file", "-", "--content-type", "text/plain; charset=utf-8", stdin=stdin
    )
    notification = Notification.objects.get(pk=int(out))
    assert bytes(notification.content) == "line one\n€".encode()
    assert notification.content_type == "text/plain; charset=utf-8"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["UN..X", "--json", "1"], "not published: "),
        (["UN.CEFACT.*", "--json", "1"], "not published: "),
        (["orders", "--json", "{nope"], "--json is not valid JSON: Expecting property name"),
        (["orders", "--json", "1", "--content-type", "text/plain"], "--content-type applies to --file only"),
        (["orders", "--file", "/nonexistent/x"], "cannot read --file /nonexistent/x: No such file or directory"),
        (["orders", "--file", "-", "--content-type", "text"], "--content-type must look like type/subtype"),
        (["orders", "--file", "-", "--content-type", "text/plain\r\nX-Evil: 1"], "--content-type must be printable"),
    ],
)
def test_publish_refusals_are_command_errors_that_say_why(sent, args: list[str], message: str) -> None:
    with pytest.raises(CommandError) as error:
        run("hub_publish", *args, stdin=io.BytesIO(b"x"))
    assert message in str(error.value)
    assert not Notification.objects.exists()
    assert sent == []


def test_publish_needs_exactly_one_of_file_and_json(sent) -> None:
    with pytest.raises(CommandError, match="one of the arguments --file --json is required"):
        run("hub_publish", "orders")
    with pytest.raises(CommandError, match="not allowed with argument"):
        run("hub_publish", "orders", "--json", "1", "--file", "-")


def test_publish_of_content_over_the_limit_is_refused(sent, settings, tmp_path: Path) -> None:
    settings.HUB_MAX_CONTENT_BYTES = 10
    path = tmp_path / "big"
    path.write_bytes(b"x" * 11)
    with pytest.raises(CommandError, match="larger than HUB_MAX_CONTENT_BYTES"):
        run("hub_publish", "orders", "--file", str(path))
    path.write_bytes(b"x" * 10)
    run("hub_publish", "orders", "--file", str(path))
    assert Notification.objects.count() == 1


# --- hub_subscriptions -------------------------------------------------------------------------


def _table(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()]


def test_subscriptions_table_shows_state_and_whether_a_secret_is_set_never_the_secret() -> None:
    # given
    live = SubscriptionFactory(topic="UN.CEFACT", callback="https://a.example/cb", secret="s3cret-value")
    paused = SubscriptionFactory(topic="orders", callback="https://b.example/cb", state=Subscription.State.PAUSED)
    expired = SubscriptionFactory(topic="orders", callback="https://c.example/cb", expired=True)
    # when
    out, _ = run("hub_subscriptions")
    # then: newest first, under a header
    header, rule, *rows = _table(out)
    assert header == ["id", "state", "topic", "callback", "expires_at", "secret"]
    assert all(set(dashes) == {"-"} for dashes in rule)
    assert [row[:4] + row[-1:] for row in rows] == [
        [str(expired.pk), "expired", "orders", "https://c.example/cb", "no"],
        [str(paused.pk), "paused", "orders", "https://b.example/cb", "no"],
        [str(live.pk), "active", "UN.CEFACT", "https://a.example/cb", "yes"],
    ]
    assert rows[2][4:6] == [live.expires_at.strftime("%Y-%m-%d"), live.expires_at.strftime("%H:%M:%SZ")]
    assert "s3cret" not in out


def test_subscriptions_filter_by_topic_however_written_callback_text_and_state() -> None:
    prefix = SubscriptionFactory(topic="UN.CEFACT.*", callback="https://a.example/cb")
    SubscriptionFactory(topic="UN.CEFACTX", callback="https://a.example/cb")
    other_host = SubscriptionFactory(topic="UN.CEFACT", callback="https://b.example/hook")
    SubscriptionFactory(topic="UN.CEFACT", callback="https://c.example/cb", expired=True)

    def ids(*args: str) -> list[int]:
        out, _ = run("hub_subscriptions", *args)
        return [int(row[0]) for row in _table(out)[2:]]

    assert set(ids("--topic", "un.cefact", "--state", "active")) == {prefix.pk, other_host.pk}
    assert ids("--topic", "UN.CEFACT", "--callback", "b.example") == [other_host.pk]
    assert len(ids("--topic", "UN.CEFACT", "--state", "expired")) == 1
    assert ids("--state", "paused") == []


def test_subscriptions_matching_lists_what_a_published_topic_reaches() -> None:
    root = SubscriptionFactory(topic="UN")
    cefact = SubscriptionFactory(topic="UN.CEFACT")
    SubscriptionFactory(topic="UN.CEFACT.OTHER")
    out, _ = run("hub_subscriptions", "--matching", "UN.CEFACT.TRADE")
    assert [int(row[0]) for row in _table(out)[2:]] == [cefact.pk, root.pk]


def test_subscriptions_limit_says_when_more_match() -> None:
    SubscriptionFactory.create_batch(3)
    out, err = run("hub_subscriptions", "--limit", "2")
    assert len(_table(out)) == 2 + 2
    assert "showing the first 2; more match" in err
    out, err = run("hub_subscriptions", "--limit", "0")
    assert len(_table(out)) == 2 + 3
    assert err == ""


def test_subscriptions_with_no_match_print_nothing_on_stdout() -> None:
    out, err = run("hub_subscriptions", "--callback", "nowhere")
    assert out == ""
    assert "no subscriptions match" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--topic", "UN..X"], "invalid topic"), (["--limit", "-1"], "--limit must be 0")],
)
def test_subscriptions_refusals(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run("hub_subscriptions", *args)


# --- hub_expire --------------------------------------------------------------------------------


def test_expire_removes_only_expired_subscriptions_and_prints_the_count() -> None:
    live = SubscriptionFactory()
    SubscriptionFactory.create_batch(2, expired=True)
    out, _ = run("hub_expire", "--dry-run")
    assert out == "2 expired subscriptions would be removed\n"
    assert Subscription.objects.count() == 3
    out, _ = run("hub_expire")
    assert out.strip() == "2 expired subscriptions removed"
    assert list(Subscription.objects.all()) == [live]
    out, _ = run("hub_expire")
    assert out.strip() == "0 expired subscriptions removed"


@pytest.mark.parametrize("name", ["hub_publish", "hub_subscriptions", "hub_expire"])
def test_every_command_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        call_command(name, "--help")
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: ") and name in text and len(text) > 400


def test_publish_prints_only_the_id_on_stdout(sent) -> None:
    out, _ = run("hub_publish", "orders", "--json", json.dumps([1, 2]), verbosity=2)
    assert out == f"{Notification.objects.get().pk}\n"


# --- hub_retry_failed --------------------------------------------------------------------------


def test_retry_failed_for_a_subscription_that_does_not_exist_fails_with_a_message(sent) -> None:
    with pytest.raises(CommandError, match="there is no subscription 999"):
        run("hub_retry_failed", "--subscription", "999")
    assert sent == []


def test_retry_failed_for_a_delivery_that_does_not_exist_fails_with_a_message(sent) -> None:
    with pytest.raises(CommandError, match="there is no delivery 999"):
        run("hub_retry_failed", "--delivery", "999")
    assert sent == []


def test_retry_failed_for_a_delivery_that_is_not_failed_says_what_state_it_is_in(sent) -> None:
    # given a delivery that succeeded
    delivery = DeliveryFactory(status=Delivery.Status.DELIVERED)
    # then
    with pytest.raises(
        CommandError, match=f"only a failed delivery can be retried; delivery {delivery.pk} is delivered"
    ):
        run("hub_retry_failed", "--delivery", str(delivery.pk))
    assert sent == []


def test_retry_failed_for_an_existing_subscription_without_failures_reports_zero(sent) -> None:
    subscription = SubscriptionFactory()
    out, _ = run("hub_retry_failed", "--subscription", str(subscription.pk))
    assert "0 failed deliveries sent again" in out
