"""The topic rules in subscriptions/topics.py: pure functions, no database."""

import re

import pytest

from subscriptions.topics import (
    MAX_TOPIC_LENGTH,
    InvalidTopic,
    has_space_or_control,
    is_url_topic,
    link_target,
    matches,
    publish_keys,
    subscription_key,
)

# --- URL topics ---------------------------------------------------------------------


def test_url_topic_matches_itself():
    assert matches("https://example.com/feed", "https://example.com/feed")


def test_url_topic_key_is_the_topic_unchanged():
    topic = "https://Example.com/Feed?Page=1"
    assert subscription_key(topic) == topic
    assert publish_keys(topic) == [topic]


def test_url_topic_path_case_matters():
    assert not matches("https://example.com/Feed", "https://example.com/feed")
    assert not matches("https://example.com/feed", "https://example.com/FEED")


def test_url_topic_query_string_matters():
    assert not matches("https://example.com/feed?a=1", "https://example.com/feed")
    assert not matches("https://example.com/feed", "https://example.com/feed?a=1")


def test_url_topic_does_not_match_a_longer_path():
    assert not matches("https://example.com/feed", "https://example.com/feed/more")


def test_url_topic_does_not_match_other_scheme():
    assert not matches("http://example.com/feed", "https://example.com/feed")


def test_url_topic_is_recognised_whatever_the_scheme_case():
    assert is_url_topic("HTTPS://example.com/feed")
    assert is_url_topic("Http://example.com/feed")
    assert subscription_key("HTTPS://example.com/feed") == "HTTPS://example.com/feed"


def test_dotted_topic_is_not_a_url_topic():
    assert not is_url_topic("UN.CEFACT")
    assert not is_url_topic("http")
    assert not is_url_topic("https:/example.com")


def test_url_topic_with_dots_in_the_host_is_not_split_into_segments():
    assert publish_keys("https://a.b.example.com/x.y") == ["https://a.b.example.com/x.y"]
    assert not matches("https://a.b.example.com/x.y", "https://a.b.example.com/x.y.z")


def test_url_topic_with_a_wildcard_looking_ending_is_an_exact_url():
    # A URL is never a predicate: '.*' at its end is just part of the URL.
    assert subscription_key("https://example.com/feed.*") == "https://example.com/feed.*"
    assert not matches("https://example.com/feed.*", "https://example.com/feed.rss")


def test_url_topic_without_host_is_refused():
    with pytest.raises(InvalidTopic, match="no host"):
        subscription_key("https:///feed")
    with pytest.raises(InvalidTopic, match="no host"):
        publish_keys("http://")


@pytest.mark.parametrize("topic", ["https://example.com:99999/feed", "https://example.com:port/feed"])
def test_url_topic_with_bad_port_is_refused(topic):
    with pytest.raises(InvalidTopic, match="not a valid URL"):
        subscription_key(topic)
    with pytest.raises(InvalidTopic, match="not a valid URL"):
        publish_keys(topic)


def test_url_topic_with_broken_ipv6_host_is_refused():
    with pytest.raises(InvalidTopic, match="not a valid URL"):
        subscription_key("https://[::1/feed")


# --- Dotted predicates ----------------------------------------------------------------


@pytest.mark.parametrize("subscribed", ["UN.CEFACT", "UN.CEFACT.*"])
@pytest.mark.parametrize("published", ["UN.CEFACT", "UN.CEFACT.TRADE", "UN.CEFACT.TRADE.CO.created"])
def test_subscription_to_prefix_receives_same_and_deeper_topics(subscribed, published):
    assert matches(subscribed, published)


@pytest.mark.parametrize("subscribed", ["UN.CEFACT", "UN.CEFACT.*"])
@pytest.mark.parametrize("published", ["UN.CEFACTX", "UN.CEFACTX.TRADE", "UN", "UN.CEFAC", "XUN.CEFACT", "UN.OTHER"])
def test_subscription_to_prefix_never_receives_a_partial_segment_or_sibling(subscribed, published):
    assert not matches(subscribed, published)


@pytest.mark.parametrize(
    ("subscribed", "published"),
    [
        ("un.cefact", "UN.CEFACT.TRADE"),
        ("UN.CEFACT", "un.cefact.trade"),
        ("Un.CeFaCt.*", "uN.cEfAcT"),
        ("UN.CEFACT.TRADE.CO.CREATED", "UN.CEFACT.TRADE.CO.created"),
    ],
)
def test_dotted_topic_matching_ignores_case(subscribed, published):
    assert matches(subscribed, published)


def test_deeper_subscription_does_not_receive_a_shallower_topic():
    assert not matches("UN.CEFACT.TRADE", "UN.CEFACT")
    assert not matches("UN.CEFACT.TRADE.*", "UN.CEFACT")


def test_single_segment_subscription_receives_everything_under_it():
    assert matches("UN", "UN.CEFACT.TRADE")
    assert matches("UN.*", "UN")


def test_subscription_key_is_lowercased_without_wildcard():
    assert subscription_key("UN.CEFACT.*") == "un.cefact"
    assert subscription_key("UN.CEFACT") == "un.cefact"
    assert subscription_key("UN.CEFACT.TRADE.CO.created") == "un.cefact.trade.co.created"


def test_publish_keys_lists_every_leading_run_of_segments():
    assert publish_keys("UN.CEFACT.TRADE") == ["un", "un.cefact", "un.cefact.trade"]
    assert publish_keys("Single") == ["single"]


def test_dotted_topic_and_url_topic_never_match_each_other():
    assert not matches("https.example", "https://example.com/feed")
    assert not matches("https://example.com/feed", "https")


@pytest.mark.parametrize("topic", ["UN..CEFACT", ".UN", "UN.", "UN..*", ".*", "..", "."])
def test_dotted_topic_with_empty_segment_is_refused(topic):
    with pytest.raises(InvalidTopic, match="empty segment"):
        subscription_key(topic)


@pytest.mark.parametrize("topic", ["UN.*.TRADE", "UN.CEFACT*", "UN.CE*FACT", "*.UN", "UN.CEFACT.*.*", "UN.**"])
def test_dotted_topic_with_star_not_as_whole_last_segment_is_refused(topic):
    with pytest.raises(InvalidTopic, match=r"'\*' only as its whole last segment"):
        subscription_key(topic)


def test_lone_star_subscription_is_refused():
    with pytest.raises(InvalidTopic, match=r"lone '\*'"):
        subscription_key("*")


def test_lone_star_publish_is_refused():
    with pytest.raises(InvalidTopic):
        publish_keys("*")


@pytest.mark.parametrize("topic", ["UN. CEFACT", "UN.CEFACT ", " UN", "UN\tCEFACT", "UN\nCEFACT", "UN\u00a0X"])
def test_topic_with_whitespace_is_refused(topic):
    with pytest.raises(InvalidTopic, match="whitespace or control characters"):
        subscription_key(topic)
    with pytest.raises(InvalidTopic, match="whitespace or control characters"):
        publish_keys(topic)


@pytest.mark.parametrize("topic", ["UN\x00CEFACT", "UN\x1fX", "UN\x7fX", "https://example.com/\x00"])
def test_topic_with_control_character_is_refused(topic):
    with pytest.raises(InvalidTopic, match="whitespace or control characters"):
        subscription_key(topic)


def test_url_topic_with_space_is_refused():
    with pytest.raises(InvalidTopic, match="whitespace"):
        subscription_key("https://example.com/my feed")


def test_empty_topic_is_refused():
    with pytest.raises(InvalidTopic, match="empty"):
        subscription_key("")
    with pytest.raises(InvalidTopic, match="empty"):
        publish_keys("")


def test_topic_of_max_length_is_accepted():
    dotted = "A." * ((MAX_TOPIC_LENGTH - 2) // 2) + "BB"
    assert len(dotted) == MAX_TOPIC_LENGTH
    url = "https://example.com/" + "x" * (MAX_TOPIC_LENGTH - len("https://example.com/"))
    assert len(url) == MAX_TOPIC_LENGTH
    assert subscription_key(dotted)
    assert subscription_key(url) == url


@pytest.mark.parametrize(
    "topic",
    [
        "A" * (MAX_TOPIC_LENGTH + 1),
        "https://example.com/" + "x" * MAX_TOPIC_LENGTH,
    ],
)
def test_topic_longer_than_max_length_is_refused(topic):
    with pytest.raises(InvalidTopic, match=f"longer than {MAX_TOPIC_LENGTH} characters"):
        subscription_key(topic)
    with pytest.raises(InvalidTopic, match=f"longer than {MAX_TOPIC_LENGTH} characters"):
        publish_keys(topic)


@pytest.mark.parametrize("topic", ["UN.CEFACT.*", "UN.*"])
def test_publishing_to_a_wildcard_topic_is_refused(topic):
    with pytest.raises(InvalidTopic, match=re.escape("cannot end in '.*'")):
        publish_keys(topic)


def test_matches_is_false_for_an_invalid_topic_on_either_side():
    assert not matches("UN..CEFACT", "UN.CEFACT")
    assert not matches("UN.CEFACT", "UN.CEFACT.*")
    assert not matches("*", "UN")
    assert not matches("", "")


def test_invalid_topic_is_a_value_error():
    assert issubclass(InvalidTopic, ValueError)


@pytest.mark.parametrize("topic", ["ftp://example.com/feed", "urn://x.y", "mailto://a.b"])
def test_url_topic_of_another_scheme_is_refused(topic):
    with pytest.raises(InvalidTopic, match="http:// or https://"):
        subscription_key(topic)
    with pytest.raises(InvalidTopic, match="http:// or https://"):
        publish_keys(topic)


# --- Characters a Link target cannot hold ---------------------------------------------------


@pytest.mark.parametrize(
    "topic",
    [
        'LNK.A>;rel="self",<LNK.B',
        "https://example.com/a>b",
        "https://example.com/<a",
        'https://example.com/"quoted"',
        "https://example.com/{x}",
        "https://example.com/a|b",
        "https://example.com/a\\b",
        "https://example.com/a^b",
        "https://example.com/a`b",
        "UN.CEFACT<",
    ],
)
def test_topic_with_a_character_a_link_target_cannot_hold_is_refused(topic):
    with pytest.raises(InvalidTopic, match="must be percent-encoded"):
        subscription_key(topic)
    with pytest.raises(InvalidTopic, match="must be percent-encoded"):
        publish_keys(topic)


@pytest.mark.parametrize(
    "topic",
    ["https://example.com/a%3Eb", "https://ex.com/a,b;c?x=1&y=[2]#f", "https://ex.com/~u/é", "UN.CEFACT.TRADE"],
)
def test_topic_with_only_uri_characters_or_non_ascii_is_accepted(topic):
    assert subscription_key(topic)
    assert publish_keys(topic)


@pytest.mark.parametrize(
    ("target", "sent"),
    [
        ("UN.CEFACT.TRADE", "UN.CEFACT.TRADE"),
        ("https://ex.com/a,b;c?x=1&y=%20#f", "https://ex.com/a,b;c?x=1&y=%20#f"),
        ('LNK.A>;rel="self",<LNK.B', "LNK.A%3E;rel=%22self%22,%3CLNK.B"),
        ("https://ex.com/é/日本", "https://ex.com/%C3%A9/%E6%97%A5%E6%9C%AC"),
        ("https://ex.com/a b", "https://ex.com/a%20b"),
    ],
)
def test_link_target_percent_encodes_what_a_uri_cannot_hold(target, sent):
    assert link_target(target) == sent


def test_a_stored_topic_cannot_add_a_self_link_of_its_own():
    from subscriptions.delivery import link_header
    from websubhub.client import parse_link_header

    value = link_header("http://hub.test/hub", 'LNK.A>;rel="self",<LNK.B')
    assert value == '<http://hub.test/hub>; rel="hub", <LNK.A%3E;rel=%22self%22,%3CLNK.B>; rel="self"'
    assert parse_link_header(value) == {"hub": "http://hub.test/hub", "self": "LNK.A%3E;rel=%22self%22,%3CLNK.B"}


def test_space_or_control_is_exactly_unicode_whitespace_c0_controls_and_del():
    # every code point, against the rule's own words: str.isspace(), below 32, or 127
    wrong = [
        cp for cp in range(0x110000) if has_space_or_control(chr(cp)) != (chr(cp).isspace() or cp < 32 or cp == 127)
    ]
    assert wrong == []
    assert has_space_or_control("UN.CEFACT\u2028X") and not has_space_or_control("UN.CEFACT.ÜBER")


def test_publish_keys_answers_a_fresh_list_each_time_and_refuses_each_time():
    # given the answer for a topic, changed by its caller
    first = publish_keys("UN.CEFACT.TRADE")
    first.append("changed")
    # then the next answer is untouched
    assert publish_keys("UN.CEFACT.TRADE") == ["un", "un.cefact", "un.cefact.trade"]
    # and a refused topic is refused again
    for _ in range(2):
        with pytest.raises(InvalidTopic):
            publish_keys("UN..CEFACT")
