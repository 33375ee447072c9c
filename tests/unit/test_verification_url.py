"""The URL the hub GETs to verify intent (WebSub §5.3): verification.callback_url."""

from urllib.parse import parse_qsl, urlsplit

from subscriptions.verification import callback_url

PARAMS = {"hub.mode": "subscribe", "hub.topic": "UN.CEFACT", "hub.challenge": "abc123", "hub.lease_seconds": "3600"}


def test_callback_without_query_gets_the_parameters_after_a_question_mark():
    assert (
        callback_url("https://sub.example/cb", PARAMS)
        == "https://sub.example/cb?hub.mode=subscribe&hub.topic=UN.CEFACT&hub.challenge=abc123&hub.lease_seconds=3600"
    )


def test_callback_query_string_is_kept_as_is_and_parameters_appended_with_ampersand():
    assert (
        callback_url("https://sub.example/cb?id=42&token=a%2Fb", {"hub.mode": "subscribe"})
        == "https://sub.example/cb?id=42&token=a%2Fb&hub.mode=subscribe"
    )


def test_callback_query_string_encoding_is_not_normalised():
    # The subscriber's own query is opaque: odd encodings and order stay byte for byte.
    url = callback_url("https://sub.example/cb?b=2&a=%7e&flag", {"hub.mode": "subscribe"})
    assert url.startswith("https://sub.example/cb?b=2&a=%7e&flag&")


def test_callback_ending_in_question_mark_gets_no_extra_separator():
    assert (
        callback_url("https://sub.example/cb?", {"hub.mode": "subscribe"})
        == "https://sub.example/cb?hub.mode=subscribe"
    )


def test_callback_ending_in_ampersand_gets_no_extra_separator():
    assert (
        callback_url("https://sub.example/cb?a=1&", {"hub.mode": "subscribe"})
        == "https://sub.example/cb?a=1&hub.mode=subscribe"
    )


def test_parameter_values_are_url_encoded():
    topic = "https://example.com/feed?x=1&y=a b#top"
    url = callback_url("https://sub.example/cb", {"hub.topic": topic})
    assert url == "https://sub.example/cb?hub.topic=https%3A%2F%2Fexample.com%2Ffeed%3Fx%3D1%26y%3Da+b%23top"


def test_parameter_values_round_trip_exactly():
    params = {
        "hub.mode": "denied",
        "hub.topic": "https://example.com/feed?x=1&y=2",
        "hub.reason": "not allowed: café & co = 100%",
        "hub.challenge": "A-b_c~d",
    }
    url = callback_url("https://sub.example/cb?keep=me", params)
    query = urlsplit(url).query
    assert parse_qsl(query) == [("keep", "me"), *params.items()]


def test_non_ascii_values_are_encoded_as_utf8():
    url = callback_url("https://sub.example/cb", {"hub.reason": "é"})
    assert url == "https://sub.example/cb?hub.reason=%C3%A9"


def test_fragment_is_dropped():
    assert callback_url("https://sub.example/cb#frag", {"hub.mode": "subscribe"}) == (
        "https://sub.example/cb?hub.mode=subscribe"
    )


def test_fragment_is_dropped_after_a_query_string():
    assert callback_url("https://sub.example/cb?a=1#frag", {"hub.mode": "subscribe"}) == (
        "https://sub.example/cb?a=1&hub.mode=subscribe"
    )


def test_question_mark_inside_a_fragment_is_not_taken_for_a_query():
    assert callback_url("https://sub.example/cb#frag?x=1", {"hub.mode": "subscribe"}) == (
        "https://sub.example/cb?hub.mode=subscribe"
    )


def test_callback_path_and_port_are_kept():
    assert callback_url("http://127.0.0.1:8080/a/b/", {"hub.mode": "unsubscribe"}) == (
        "http://127.0.0.1:8080/a/b/?hub.mode=unsubscribe"
    )


def test_parameter_order_is_kept():
    url = callback_url("https://sub.example/cb", PARAMS)
    assert [name for name, _ in parse_qsl(urlsplit(url).query)] == list(PARAMS)
