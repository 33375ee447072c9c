"""What the /hub endpoint accepts (WebSub §5.1): every malformed request is a 4xx that names the problem."""

from contextlib import contextmanager
from urllib.parse import quote, urlencode

import pytest

from subscriptions import hub, services
from subscriptions.models import Subscription, SubscriptionRequest
from tests.support.factories import SubscriptionFactory
from websubhub.celery import app as celery_app

FORM = "application/x-www-form-urlencoded"
TOPIC = "https://publisher.example/feed"
CALLBACK = "https://subscriber.example/callback?id=7"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def sent_tasks(monkeypatch):
    """Every task the code sends, as (name, kwargs); nothing reaches a broker."""
    sent: list[tuple[str, dict]] = []

    def send_task(name, args=None, kwargs=None, **options):
        sent.append((name, kwargs))

    @contextmanager
    def producer_or_acquire(producer=None):
        yield producer

    monkeypatch.setattr(celery_app, "send_task", send_task)
    monkeypatch.setattr(celery_app, "producer_or_acquire", producer_or_acquire)
    return sent


def post(client, fields, *, path="/hub", content_type=FORM):
    body = fields if isinstance(fields, (str, bytes)) else urlencode(fields)
    return client.post(path, data=body, content_type=content_type)


def subscribe_fields(**overrides):
    fields = {"hub.mode": "subscribe", "hub.topic": TOPIC, "hub.callback": CALLBACK}
    fields.update(overrides)
    return [(name, value) for name, value in fields.items() if value is not None]


def assert_refused(response, status, *fragments):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    for fragment in fragments:
        assert fragment in text, text
    assert not SubscriptionRequest.objects.exists()


# --- Routing and method -------------------------------------------------------------


@pytest.mark.parametrize("path", ["/hub", "/hub/", "/subscriptions", "/subscriptions/"])
def test_subscribe_is_accepted_on_every_hub_path_without_redirect(client, path):
    response = post(client, subscribe_fields(), path=path)
    assert response.status_code == 202
    assert SubscriptionRequest.objects.count() == 1


@pytest.mark.parametrize("method", ["get", "put", "delete", "patch"])
def test_other_methods_get_405_with_allow_post(client, method):
    response = getattr(client, method)("/hub")
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert "POST" in response.content.decode()


def test_get_on_hub_with_trailing_slash_is_405_not_a_redirect(client):
    response = client.get("/hub/")
    assert response.status_code == 405
    assert response["Allow"] == "POST"


# --- A valid subscribe --------------------------------------------------------------


def test_valid_subscribe_gets_202_and_one_pending_request_and_no_subscription(client):
    response = post(client, subscribe_fields(**{"hub.lease_seconds": "7200", "hub.secret": "s3cr3t"}))
    assert response.status_code == 202
    assert response["Content-Type"].startswith("text/plain")
    request = SubscriptionRequest.objects.get()
    assert request.state == SubscriptionRequest.State.PENDING
    assert request.mode == SubscriptionRequest.Mode.SUBSCRIBE
    assert request.topic == TOPIC
    assert request.callback == CALLBACK
    assert request.lease_seconds == 7200
    assert request.secret == "s3cr3t"
    assert not Subscription.objects.exists()


def test_valid_subscribe_enqueues_verification_only_after_commit(
    client, sent_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post(client, subscribe_fields())
        assert response.status_code == 202
        assert sent_tasks == []
    assert len(callbacks) == 1
    callbacks[0]()
    request = SubscriptionRequest.objects.get()
    assert sent_tasks == [("hub.verify", {"request_id": request.pk})]


def test_valid_subscribe_sends_exactly_one_verify_task(client, sent_tasks, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        post(client, subscribe_fields())
    assert sent_tasks == [("hub.verify", {"request_id": SubscriptionRequest.objects.get().pk})]


def test_subscribe_answer_names_the_request(client):
    response = post(client, subscribe_fields())
    assert str(SubscriptionRequest.objects.get().pk) in response.content.decode()


def test_subscribe_without_lease_gets_the_default_lease(client, settings):
    settings.HUB_LEASE_SECONDS_DEFAULT = 4321
    settings.HUB_LEASE_SECONDS_MIN = 1
    assert post(client, subscribe_fields()).status_code == 202
    assert SubscriptionRequest.objects.get().lease_seconds == 4321


def test_subscribe_with_empty_lease_gets_the_default_lease(client, settings):
    settings.HUB_LEASE_SECONDS_DEFAULT = 4321
    settings.HUB_LEASE_SECONDS_MIN = 1
    assert post(client, subscribe_fields(**{"hub.lease_seconds": ""})).status_code == 202
    assert SubscriptionRequest.objects.get().lease_seconds == 4321


def test_subscribe_lease_outside_bounds_is_clamped(client, settings):
    settings.HUB_LEASE_SECONDS_MIN = 100
    settings.HUB_LEASE_SECONDS_MAX = 1000
    assert post(client, subscribe_fields(**{"hub.lease_seconds": "5"})).status_code == 202
    assert post(client, subscribe_fields(**{"hub.lease_seconds": "99999999999999999999"})).status_code == 202
    assert sorted(SubscriptionRequest.objects.values_list("lease_seconds", flat=True)) == [100, 1000]


def test_unknown_fields_are_ignored(client):
    fields = [*subscribe_fields(), ("hub.extra", "x"), ("foo", "bar"), ("foo", "baz"), ("", "")]
    assert post(client, fields).status_code == 202
    assert SubscriptionRequest.objects.count() == 1


@pytest.mark.parametrize(
    "content_type", [f"{FORM}; charset=UTF-8", f"{FORM}; charset=utf-8", f"{FORM};charset=utf8", FORM.upper()]
)
def test_form_content_type_with_charset_suffix_is_accepted(client, content_type):
    assert post(client, subscribe_fields(), content_type=content_type).status_code == 202


def test_dotted_topic_subscribe_is_accepted_and_keyed_case_insensitively(client):
    assert post(client, subscribe_fields(**{"hub.topic": "UN.CEFACT.*"})).status_code == 202
    request = SubscriptionRequest.objects.get()
    assert request.topic == "UN.CEFACT.*"
    assert request.topic_key == "un.cefact"


def test_percent_encoded_utf8_values_are_decoded(client):
    body = "hub.mode=subscribe&hub.topic=UN.CAF%C3%89&hub.callback=https%3A%2F%2Fsub.example%2Fcb&hub.secret=cl%C3%A9"
    assert post(client, body).status_code == 202
    request = SubscriptionRequest.objects.get()
    assert request.topic == "UN.CAFÉ"
    assert request.secret == "clé"


def test_secret_of_199_bytes_is_accepted(client):
    assert post(client, subscribe_fields(**{"hub.secret": "s" * 199})).status_code == 202
    assert SubscriptionRequest.objects.get().secret == "s" * 199


def test_unsubscribe_of_existing_subscription_gets_202_without_lease_or_secret(client):
    SubscriptionFactory(topic=TOPIC, callback=CALLBACK)
    fields = subscribe_fields(**{"hub.mode": "unsubscribe", "hub.lease_seconds": "junk", "hub.secret": "x" * 300})
    assert post(client, fields).status_code == 202
    request = SubscriptionRequest.objects.get()
    assert request.mode == SubscriptionRequest.Mode.UNSUBSCRIBE
    assert request.lease_seconds is None
    assert request.secret == ""
    assert Subscription.objects.count() == 1


def test_unsubscribe_matches_a_dotted_subscription_whatever_the_case(client):
    SubscriptionFactory(topic="UN.CEFACT", callback=CALLBACK)
    assert post(client, subscribe_fields(**{"hub.mode": "unsubscribe", "hub.topic": "un.cefact.*"})).status_code == 202


# --- Malformed requests ---------------------------------------------------------------


def test_missing_mode_is_refused(client):
    response = post(client, [("hub.topic", TOPIC), ("hub.callback", CALLBACK)])
    assert_refused(response, 400, "hub.mode is required")


@pytest.mark.parametrize("mode", ["", "Subscribe", "SUBSCRIBE", "subscribe ", "denied", "sub"])
def test_unknown_mode_is_refused(client, mode):
    response = post(client, subscribe_fields(**{"hub.mode": mode}))
    assert_refused(response, 400, "hub.mode must be subscribe, unsubscribe or publish")


def test_unknown_mode_is_quoted_in_bounded_form(client):
    response = post(client, subscribe_fields(**{"hub.mode": "x" * 5000}))
    assert_refused(response, 400, "hub.mode must be")
    assert len(response.content) < 300


def test_duplicated_mode_is_refused(client):
    response = post(client, [*subscribe_fields(), ("hub.mode", "subscribe")])
    assert_refused(response, 400, "hub.mode was given more than once")


@pytest.mark.parametrize("name", ["hub.topic", "hub.callback", "hub.lease_seconds", "hub.secret"])
def test_duplicated_field_is_refused(client, name):
    fields = [*subscribe_fields(**{"hub.lease_seconds": "3600", "hub.secret": "k"})]
    value = dict(fields)[name]
    response = post(client, [*fields, (name, value)])
    assert_refused(response, 400, f"{name} was given more than once")


@pytest.mark.parametrize("name", ["hub.topic", "hub.callback"])
def test_missing_required_field_is_refused(client, name):
    response = post(client, subscribe_fields(**{name: None}))
    assert_refused(response, 400, f"{name} is required")


@pytest.mark.parametrize("name", ["hub.topic", "hub.callback"])
def test_missing_required_field_of_unsubscribe_is_refused(client, name):
    response = post(client, subscribe_fields(**{"hub.mode": "unsubscribe", name: None}))
    assert_refused(response, 400, f"{name} is required")


@pytest.mark.parametrize("name", ["hub.topic", "hub.callback"])
def test_empty_required_field_is_refused(client, name):
    response = post(client, subscribe_fields(**{name: ""}))
    assert_refused(response, 400, f"{name} is empty")


@pytest.mark.parametrize("lease", ["abc", "0", "-1", "-3600", "1.5", "3600.0", "1e4", "+60", "0x10", "٣"])
def test_bad_lease_is_refused(client, lease):
    response = post(client, subscribe_fields(**{"hub.lease_seconds": lease}))
    assert_refused(response, 400, "hub.lease_seconds must be a positive whole number")


def test_secret_of_200_bytes_is_refused(client):
    response = post(client, subscribe_fields(**{"hub.secret": "s" * 200}))
    assert_refused(response, 400, "hub.secret must be shorter than 200 bytes")


def test_secret_of_100_two_byte_characters_is_refused(client):
    response = post(client, subscribe_fields(**{"hub.secret": "é" * 100}))
    assert_refused(response, 400, "hub.secret must be shorter than 200 bytes")


def test_secret_with_nul_character_is_refused(client):
    response = post(client, subscribe_fields(**{"hub.secret": "ab\x00cd"}))
    assert_refused(response, 400, "hub.secret cannot contain a NUL character")


@pytest.mark.parametrize(
    "content_type", ["application/json", "text/plain", "multipart/form-data; boundary=x", "", f"{FORM}x"]
)
def test_wrong_content_type_is_refused_with_415(client, content_type):
    response = post(client, subscribe_fields(), content_type=content_type)
    assert_refused(response, 415, FORM)


@pytest.mark.parametrize("charset", ["latin-1", "iso-8859-1", "utf-16", "windows-1252"])
def test_form_in_another_charset_is_refused_with_415(client, charset):
    response = post(client, subscribe_fields(), content_type=f"{FORM}; charset={charset}")
    assert_refused(response, 415, "UTF-8", charset)


def test_body_that_is_not_utf8_is_refused(client):
    body = b"hub.mode=subscribe&hub.topic=UN.CAF\xc9&hub.callback=https%3A%2F%2Fsub.example%2Fcb"
    response = post(client, body)
    assert_refused(response, 400, "not valid UTF-8")


@pytest.mark.parametrize("encoded", ["%FF", "%C3", "%C3%28", "%ED%A0%80", "%F8%88%80%80%80"])
def test_percent_encoded_invalid_utf8_is_refused(client, encoded):
    body = f"hub.mode=subscribe&hub.topic=UN.X{encoded}&hub.callback=https%3A%2F%2Fsub.example%2Fcb"
    response = post(client, body)
    assert_refused(response, 400, "not valid UTF-8")


@pytest.mark.parametrize("field", ["hub.mode", "hub.topic", "hub.callback", "hub.secret", "hub.lease_seconds"])
@pytest.mark.parametrize("surrogate", ["%ED%B0%80", b"\xed\xb0\x80"])
def test_a_lone_surrogate_in_any_form_field_is_refused_as_invalid_utf8(client, field, surrogate):
    # UTF-8 cannot encode a surrogate: its 3-byte spelling (percent-encoded or raw) is not UTF-8.
    fields = {"hub.mode": "subscribe", "hub.topic": "UN.X", "hub.callback": "https://sub.example/cb"}
    fields.update({"hub.secret": "s", "hub.lease_seconds": "60"})
    body = "&".join(f"{name}={quote(value, safe='')}" for name, value in fields.items()).encode()
    name = field.encode()
    start = body.index(name + b"=") + len(name) + 1
    lone = surrogate if isinstance(surrogate, bytes) else surrogate.encode()
    body = body[:start] + lone + body[start:]
    # when
    response = post(client, body)
    # then
    assert_refused(response, 400, "not valid UTF-8")
    assert not SubscriptionRequest.objects.exists()


def test_form_with_too_many_fields_is_refused(client):
    fields = [*subscribe_fields(), *((f"extra{n}", "x") for n in range(hub.MAX_FIELDS))]
    response = post(client, fields)
    assert_refused(response, 400, f"more than {hub.MAX_FIELDS} fields")


def test_publish_naming_more_topics_than_the_limit_is_refused(client):
    fields = [("hub.mode", "publish")]
    fields += [("hub.url", f"https://pub.example/feed/{n}") for n in range(hub.MAX_PUBLISH_TOPICS + 1)]
    response = post(client, fields)
    assert_refused(response, 400, f"at most {hub.MAX_PUBLISH_TOPICS} topics")


@pytest.mark.parametrize(
    ("callback", "fragment"),
    [
        ("ftp://subscriber.example/cb", "must be an http:// or https:// URL"),
        ("mailto:someone@example.com", "must be an http:// or https:// URL"),
        ("javascript:alert(1)", "must be an http:// or https:// URL"),
        ("//subscriber.example/cb", "must be an http:// or https:// URL"),
        ("subscriber.example/cb", "must be an http:// or https:// URL"),
        ("https://", "has no host"),
        ("https:///cb", "has no host"),
        ("http://subscriber.example:99999/cb", "not a valid URL"),
        ("http://subscriber.example:port/cb", "not a valid URL"),
        ("http://[::1/cb", "not a valid URL"),
        ("https://subscriber.example/c b", "whitespace or control characters"),
        ("https://subscriber.example/\x00", "whitespace or control characters"),
        ("https://subscriber.example/" + "x" * 2100, "longer than 2048 characters"),
    ],
)
def test_bad_callback_is_refused(client, callback, fragment):
    response = post(client, subscribe_fields(**{"hub.callback": callback}))
    assert_refused(response, 400, "hub.callback", fragment)


@pytest.mark.parametrize(
    ("topic", "fragment"),
    [
        ("UN..CEFACT", "empty segment"),
        ("UN.*.TRADE", "only as its whole last segment"),
        ("*", "lone '*'"),
        ("UN CEFACT", "whitespace"),
        ("A" * 2049, "longer than 2048"),
        ("https:///feed", "no host"),
        ("https://publisher.example:99999/feed", "not a valid URL"),
    ],
)
def test_invalid_topic_is_refused(client, topic, fragment):
    response = post(client, subscribe_fields(**{"hub.topic": topic}))
    assert_refused(response, 400, "hub.topic", fragment)


def test_unsubscribe_of_a_pair_without_subscription_gets_404(client):
    SubscriptionFactory(topic=TOPIC, callback="https://subscriber.example/other")
    SubscriptionFactory(topic="https://publisher.example/other", callback=CALLBACK)
    response = post(client, subscribe_fields(**{"hub.mode": "unsubscribe"}))
    assert_refused(response, 404, "no subscription")


def test_unsubscribe_with_invalid_topic_is_400_not_404(client):
    response = post(client, subscribe_fields(**{"hub.mode": "unsubscribe", "hub.topic": "UN..X"}))
    assert_refused(response, 400, "empty segment")


def test_refused_request_sends_no_task(client, sent_tasks, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        post(client, subscribe_fields(**{"hub.callback": "ftp://x"}))
    assert callbacks == []
    assert sent_tasks == []


# --- Publish pings --------------------------------------------------------------------


def test_publish_with_a_dotted_topic_is_refused(client, sent_tasks):
    response = post(client, [("hub.mode", "publish"), ("hub.topic", "UN.CEFACT.TRADE")])
    assert_refused(response, 400, "must be an http(s) URL", "/api/notifications/")
    assert sent_tasks == []


def test_publish_to_a_wildcard_topic_is_refused(client, sent_tasks):
    response = post(client, [("hub.mode", "publish"), ("hub.topic", "UN.CEFACT.*")])
    assert_refused(response, 400, "cannot end in '.*'")
    assert sent_tasks == []


def test_publish_without_topic_is_refused(client):
    response = post(client, [("hub.mode", "publish")])
    assert_refused(response, 400, "hub.url or hub.topic")


def test_publish_with_url_topics_enqueues_one_fetch_per_distinct_topic(client, sent_tasks):
    fields = [
        ("hub.mode", "publish"),
        ("hub.url", "https://publisher.example/a"),
        ("hub.url", "https://publisher.example/b"),
        ("hub.topic", "https://publisher.example/a"),
    ]
    response = post(client, fields)
    assert response.status_code == 202
    assert sent_tasks == [
        ("hub.fetch_topic", {"topic": "https://publisher.example/a"}),
        ("hub.fetch_topic", {"topic": "https://publisher.example/b"}),
    ]


def test_publish_ping_checks_every_topic_before_it_asks_the_throttle_or_queues_a_fetch(sent_tasks):
    # given a throttle that records being asked
    asked: list[int] = []

    def throttle() -> None:
        asked.append(1)

    a, b = "https://publisher.example/a", "https://publisher.example/b"
    # when one topic of the ping is refused, nothing is asked or queued
    with pytest.raises(services.HubError) as refused:
        services.publish_ping(topics=[a, "un.cefact"], throttle=throttle)
    assert refused.value.status == 400 and "must be an http(s) URL" in refused.value.message
    assert asked == [] and sent_tasks == []
    # when every topic passes, the throttle is asked once and each topic is fetched once
    ping = services.publish_ping(topics=[a, b, a], throttle=throttle)
    assert (ping.topics, ping.wait) == (2, None) and asked == [1]
    assert sent_tasks == [("hub.fetch_topic", {"topic": a}), ("hub.fetch_topic", {"topic": b})]
    # and a throttle that says wait queues nothing
    ping = services.publish_ping(topics=[a], throttle=lambda: 3.5)
    assert (ping.topics, ping.wait) == (0, 3.5) and len(sent_tasks) == 2


# --- The service-level validators the endpoint relies on ----------------------------------


def test_secret_validate_counts_bytes_not_characters():
    services.secret_validate("s" * 199)
    services.secret_validate("é" * 99 + "s")  # 199 bytes
    services.secret_validate("")
    with pytest.raises(services.HubError, match="shorter than 200 bytes"):
        services.secret_validate("s" * 200)
    with pytest.raises(services.HubError, match="shorter than 200 bytes"):
        services.secret_validate("é" * 100)  # 100 characters, 200 bytes
    with pytest.raises(services.HubError, match="shorter than 200 bytes"):
        services.secret_validate("€" * 67)  # 67 characters, 201 bytes


@pytest.mark.parametrize(
    "callback",
    [
        "http://subscriber.example/cb",
        "https://subscriber.example/cb?x=1&y=2",
        "HTTPS://SUBSCRIBER.EXAMPLE/CB",
        "http://127.0.0.1:8080/",
        "http://[::1]:8080/cb",
        "https://user:pass@subscriber.example/cb#frag",
    ],
)
def test_callback_validate_accepts_http_and_https_urls(callback):
    services.callback_validate(callback)


@pytest.mark.parametrize(
    ("callback", "fragment"),
    [
        ("", "empty"),
        ("ftp://subscriber.example/cb", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("https://", "no host"),
        ("http://h:65536/", "not a valid URL"),
        ("http://h:-1/", "not a valid URL"),
        ("http://h/\t", "whitespace"),
        ("http://h/" + "x" * 2048, "longer than 2048"),
    ],
)
def test_callback_validate_refuses_bad_callbacks(callback, fragment):
    with pytest.raises(services.HubError, match=fragment) as exc_info:
        services.callback_validate(callback)
    assert exc_info.value.status == 400


def test_a_chunked_body_on_a_server_that_does_not_end_the_stream_gets_411_saying_why(client):
    # Django's own server (and its test client) sets no wsgi.input_terminated: reading to the end would hang.
    response = client.post(
        "/hub", data=urlencode(subscribe_fields()), content_type=FORM, headers={"Transfer-Encoding": "chunked"}
    )
    assert_refused(response, 411, "chunked", "Content-Length")
