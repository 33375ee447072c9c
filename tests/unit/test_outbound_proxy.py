"""HUB_OUTBOUND_PROXY: verification GETs, deliveries and topic fetches all go through a real CONNECT proxy on 127.0.0.1.

The proxy (tests/support/proxy.py) answers only CONNECT, so a request the hub
forwarded instead of tunnelling would be refused and recorded; it resolves test
names itself, as an egress proxy does, so the hub needs no DNS for them.
"""

import base64
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from django.core.exceptions import ImproperlyConfigured

from subscriptions import delivery, http, netguard, services, verification
from subscriptions.models import Notification
from tests.support.dripping import DrippingServer
from tests.support.proxy import ConnectProxy
from tests.support.subscriber import Subscriber, Verification

JSON = {"Content-Type": "application/json"}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def proxy(settings) -> Iterator[ConnectProxy]:
    server = ConnectProxy(hosts={"subscriber.test": "127.0.0.1"})
    settings.HUB_OUTBOUND_PROXY = server.url
    yield server
    server.close()


@pytest.fixture
def guard_on(settings) -> None:
    """The address guard as in production, whatever the test environment sets."""
    settings.HUB_ALLOW_PRIVATE_ADDRESSES = False
    settings.HUB_ALLOWED_PORTS = netguard.DEFAULT_ALLOWED_PORTS


@pytest.fixture
def hub_resolves_nothing(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail any name lookup by the hub but the proxy's own address (the proxy here resolves through its `hosts`)."""
    looked_up: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        looked_up.append(host)
        if host != "127.0.0.1":
            raise socket.gaierror(socket.EAI_NONAME, f"the test refuses to resolve {host}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(netguard, "getaddrinfo", getaddrinfo)
    return looked_up


# --- Every kind of request goes through the proxy --------------------------------------------


def test_a_verification_get_is_tunnelled_through_the_proxy(proxy: ConnectProxy, subscriber: Subscriber) -> None:
    # when
    params = {"hub.mode": "subscribe", "hub.challenge": "challenge-1"}
    answer = verification.verify(subscriber.url("/cb"), params, "challenge-1")
    # then: one CONNECT to the callback, and the GET arrived through it
    assert answer.ok, answer.reason
    assert proxy.targets() == [f"127.0.0.1:{subscriber.port}"]
    assert proxy.others() == []
    (get,) = subscriber.verifications("/cb")
    assert get.param("hub.challenge") == "challenge-1"


def test_a_delivery_post_is_tunnelled_through_the_proxy(proxy: ConnectProxy, subscriber: Subscriber) -> None:
    result = delivery.post(subscriber.url("/cb"), b'{"n": 1}', JSON)
    assert result.outcome is delivery.Outcome.DELIVERED, result.error
    assert proxy.targets() == [f"127.0.0.1:{subscriber.port}"]
    assert [r.body for r in subscriber.deliveries("/cb")] == [b'{"n": 1}']


@pytest.mark.django_db
def test_a_topic_fetch_is_tunnelled_through_the_proxy(proxy: ConnectProxy, subscriber: Subscriber) -> None:
    subscriber.content["/feed"] = (b"<feed/>", "application/atom+xml")
    services.topic_fetch_and_publish(topic=subscriber.url("/feed"))
    assert proxy.targets() == [f"127.0.0.1:{subscriber.port}"]
    assert Notification.objects.get().content == b"<feed/>"


def test_plain_http_is_tunnelled_not_forwarded_and_the_request_line_is_the_path(
    proxy: ConnectProxy, subscriber: Subscriber
) -> None:
    # urllib3 on its own would send `POST http://127.0.0.1:port/cb?x=1` to the proxy, which refuses it
    result = delivery.post(subscriber.url("/cb?x=1"), b"{}", JSON)
    assert result.outcome is delivery.Outcome.DELIVERED, result.error
    (post,) = subscriber.deliveries("/cb")
    assert post.query == {"x": ["1"]}
    assert post.headers["Host"] == f"127.0.0.1:{subscriber.port}"
    assert "Proxy-Authorization" not in post.headers


def test_deliveries_to_one_callback_keep_their_tunnel_alive(proxy: ConnectProxy, subscriber: Subscriber) -> None:
    for _ in range(3):
        assert delivery.post(subscriber.url("/cb"), b"{}", JSON).outcome is delivery.Outcome.DELIVERED
    assert len(subscriber.deliveries("/cb")) == 3
    assert len(proxy.targets()) == 1
    assert len({r.peer for r in subscriber.deliveries("/cb")}) == 1


def test_the_proxy_credentials_go_with_the_connect_only(settings, subscriber: Subscriber) -> None:
    server = ConnectProxy()
    try:
        settings.HUB_OUTBOUND_PROXY = f"http://hub:s%40cret@127.0.0.1:{server.port}"
        assert delivery.post(subscriber.url("/cb"), b"{}", JSON).outcome is delivery.Outcome.DELIVERED
        (connect,) = server.requests
    finally:
        server.close()
    assert connect.headers["Proxy-Authorization"] == "Basic " + base64.b64encode(b"hub:s@cret").decode()
    assert "Proxy-Authorization" not in subscriber.deliveries("/cb")[0].headers


def test_without_the_setting_nothing_goes_through_the_proxy(settings, subscriber: Subscriber) -> None:
    server = ConnectProxy()
    try:
        settings.HUB_OUTBOUND_PROXY = ""
        assert delivery.post(subscriber.url("/cb"), b"{}", JSON).outcome is delivery.Outcome.DELIVERED
        assert server.requests == []
    finally:
        server.close()


# --- The address guard with a proxy -------------------------------------------------------------


@pytest.mark.usefixtures("guard_on")
def test_with_the_guard_on_a_name_goes_to_the_proxy_unresolved_and_the_proxy_own_loopback_address_is_allowed(
    proxy: ConnectProxy, subscriber: Subscriber, hub_resolves_nothing: list[str]
) -> None:
    # given: a callback name only the proxy can resolve, and a proxy on 127.0.0.1
    url = f"http://subscriber.test:{subscriber.port}/cb"
    # when: accepted and delivered
    netguard.check_url_with_settings(url)
    result = delivery.post(url, b"{}", JSON)
    # then: the proxy resolved it, the hub looked up only the proxy's address
    assert result.outcome is delivery.Outcome.DELIVERED, result.error
    assert proxy.targets() == [f"subscriber.test:{subscriber.port}"]
    assert set(hub_resolves_nothing) <= {"127.0.0.1"}
    assert subscriber.deliveries("/cb")[0].headers["Host"] == f"subscriber.test:{subscriber.port}"


@pytest.mark.usefixtures("guard_on", "hub_resolves_nothing")
def test_without_a_proxy_the_same_name_is_refused_because_the_hub_cannot_resolve_it(settings) -> None:
    settings.HUB_OUTBOUND_PROXY = ""
    with pytest.raises(netguard.UnresolvableDestination):
        netguard.check_url_with_settings("http://subscriber.test:8080/cb")


@pytest.mark.usefixtures("guard_on")
@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "a loopback address"),
        ("10.1.2.3", "a private address"),
        ("169.254.169.254", "a link-local address"),
        ("[::1]", "a loopback address"),
        ("0x7f.1", "a loopback address"),
        ("localhost", "a localhost name"),
        ("metadata.localhost", "a localhost name"),
    ],
)
def test_with_a_proxy_a_private_destination_by_literal_or_name_is_refused_before_any_connect(
    proxy: ConnectProxy, subscriber: Subscriber, host: str, reason: str
) -> None:
    url = f"http://{host}:{subscriber.port}/cb"
    # at acceptance
    with pytest.raises(netguard.ForbiddenDestination, match=reason):
        netguard.check_url_with_settings(url)
    # and at connect time (a stored callback, a redirect hop), before the CONNECT
    result = delivery.post(url, b"{}", JSON)
    assert result.outcome is delivery.Outcome.RETRY
    assert result.error.startswith("refused: refused by the outbound address guard")
    assert reason in result.error
    assert proxy.requests == []
    assert subscriber.received == []


@pytest.mark.usefixtures("guard_on")
def test_with_a_proxy_a_destination_port_outside_the_allowed_ports_is_refused_before_the_connect(
    proxy: ConnectProxy, settings
) -> None:
    settings.HUB_ALLOWED_PORTS = "443"
    result = delivery.post("http://subscriber.test:8080/cb", b"{}", JSON)
    assert result.outcome is delivery.Outcome.RETRY
    assert "port 8080 is not allowed" in result.error
    assert proxy.requests == []


@pytest.mark.usefixtures("guard_on")
def test_a_redirect_hop_to_a_private_literal_is_refused_through_the_proxy(
    proxy: ConnectProxy, subscriber: Subscriber
) -> None:
    # given: a server reached by name through the proxy that redirects to the metadata address
    subscriber.verification["/moved"] = Verification(status=302, location="http://169.254.169.254/latest/")
    # when: followed, as a topic fetch follows redirects
    with pytest.raises(netguard.ForbiddenDestinationError, match=r"169\.254\.169\.254 is .*a link-local address"):
        http.session().get(
            f"http://subscriber.test:{subscriber.port}/moved?hub.mode=x", allow_redirects=True, timeout=5, stream=True
        )
    # then: the first hop went through the proxy, the second was never asked for
    assert proxy.targets() == [f"subscriber.test:{subscriber.port}"]


# --- What a failed tunnel records ---------------------------------------------------------------


def test_a_connect_the_proxy_refuses_is_a_failed_attempt_naming_the_proxy(settings, subscriber: Subscriber) -> None:
    server = ConnectProxy(refuse=lambda target: 403)
    try:
        settings.HUB_OUTBOUND_PROXY = server.url
        result = delivery.post(subscriber.url("/cb"), b"{}", JSON)
    finally:
        server.close()
    assert result.outcome is delivery.Outcome.RETRY
    assert result.error == (
        f"proxy error: HUB_OUTBOUND_PROXY refused to tunnel to 127.0.0.1:{subscriber.port} "
        "(403 Refused by the test proxy)"
    )
    assert subscriber.received == []


def test_a_proxy_that_does_not_answer_is_a_failed_attempt_naming_the_proxy(settings, subscriber: Subscriber) -> None:
    # given: a port nothing listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.HUB_OUTBOUND_PROXY = f"http://127.0.0.1:{port}"
    result = delivery.post(subscriber.url("/cb"), b"{}", JSON)
    assert result.outcome is delivery.Outcome.RETRY
    assert result.error == "proxy error: could not connect to HUB_OUTBOUND_PROXY"
    assert subscriber.received == []


# --- The deadline through the proxy ---------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["dripped-status-line", "dripped-tls-handshake-in-tls"])
def test_a_callback_dripping_through_the_tunnel_is_cut_at_the_total_deadline(
    settings, ca: trustme.CA, ca_bundle: Path, tls: bool
) -> None:
    # given: the connect and read timeouts alone would let it run for seconds
    settings.HUB_HTTP_CONNECT_TIMEOUT, settings.HUB_HTTP_READ_TIMEOUT, settings.HUB_HTTP_TOTAL_TIMEOUT = 2.0, 3.0, 1.0
    if tls:
        # an https:// proxy, and a callback whose TLS handshake (inside the proxy's TLS) never ends
        dripping = DrippingServer(interval=0.1, body=b"\x16\x03\x03\x40\x00" + b"\x00" * 1000, raw=True)
        server = ConnectProxy(hosts={"slow.test": "127.0.0.1"}, tls=_server_context(ca, "127.0.0.1"))
    else:
        dripping = DrippingServer(interval=0.1)
        server = ConnectProxy(hosts={"slow.test": "127.0.0.1"})
    settings.HUB_OUTBOUND_PROXY = server.url
    port = dripping.port
    try:
        started = time.monotonic()
        result = delivery.post(f"{'https' if tls else 'http'}://slow.test:{dripping.port}/cb", b"{}", JSON)
        took = time.monotonic() - started
    finally:
        server.close()
        dripping.close()
    assert result.outcome is delivery.Outcome.RETRY
    assert "HUB_HTTP_TOTAL_TIMEOUT" in result.error
    assert took < 1.0 + 0.75
    assert server.targets() == [f"slow.test:{port}"]


@pytest.mark.usefixtures("ca_bundle")
def test_an_https_callback_slow_to_answer_inside_an_https_proxy_is_cut_at_the_deadline_every_time(
    settings, ca: trustme.CA, tls_subscriber: Subscriber
) -> None:
    # given: TLS inside the proxy's TLS (urllib3's SSLTransport), and an answer later than the deadline
    settings.HUB_HTTP_CONNECT_TIMEOUT, settings.HUB_HTTP_READ_TIMEOUT, settings.HUB_HTTP_TOTAL_TIMEOUT = 2.0, 3.0, 1.0
    tls_subscriber.post_delay["/slow"] = 4.0
    server = ConnectProxy(hosts={"subscriber.test": "127.0.0.1"}, tls=_server_context(ca, "127.0.0.1"))
    settings.HUB_OUTBOUND_PROXY = server.url
    try:
        # when: twice, so that the second shows the process's deadline watchdog survived the first
        for _ in range(2):
            started = time.monotonic()
            result = delivery.post(f"https://subscriber.test:{tls_subscriber.port}/slow", b"{}", JSON)
            took = time.monotonic() - started
            # then
            assert result.outcome is delivery.Outcome.RETRY
            assert "HUB_HTTP_TOTAL_TIMEOUT" in result.error
            assert took < 1.0 + 0.75
    finally:
        server.close()


# --- An https:// proxy and https destinations ---------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_bundle(ca: trustme.CA, tmp_path: Path, settings) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    settings.HUB_CA_BUNDLE = str(path)
    return path


@pytest.fixture
def tls_subscriber(ca: trustme.CA) -> Iterator[Subscriber]:
    context = _server_context(ca, "subscriber.test")
    server = Subscriber(tls=context)
    yield server
    server.close()


def _server_context(ca: trustme.CA, *names: str):
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(*names).configure_cert(context)
    return context


@pytest.mark.usefixtures("ca_bundle")
def test_an_https_callback_is_tunnelled_and_verified_for_its_own_name(
    proxy: ConnectProxy, tls_subscriber: Subscriber
) -> None:
    url = f"https://subscriber.test:{tls_subscriber.port}/cb"
    result = delivery.post(url, b"{}", JSON)
    assert result.outcome is delivery.Outcome.DELIVERED, result.error
    assert proxy.targets() == [f"subscriber.test:{tls_subscriber.port}"]
    assert len(tls_subscriber.deliveries("/cb")) == 1


@pytest.mark.usefixtures("ca_bundle")
def test_an_https_callback_whose_certificate_names_another_host_fails_through_the_proxy(
    proxy: ConnectProxy, tls_subscriber: Subscriber
) -> None:
    proxy.hosts["other.test"] = "127.0.0.1"
    result = delivery.post(f"https://other.test:{tls_subscriber.port}/cb", b"{}", JSON)
    assert result.outcome is delivery.Outcome.RETRY
    assert result.error == "tls error: CERTIFICATE_VERIFY_FAILED"
    assert tls_subscriber.deliveries() == []


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_an_https_proxy_tunnels_http_and_https_destinations(
    ca: trustme.CA, ca_bundle: Path, settings, tls_subscriber: Subscriber, subscriber: Subscriber, scheme: str
) -> None:
    server = ConnectProxy(hosts={"subscriber.test": "127.0.0.1"}, tls=_server_context(ca, "127.0.0.1"))
    try:
        settings.HUB_OUTBOUND_PROXY = server.url
        target = tls_subscriber if scheme == "https" else subscriber
        url = f"{scheme}://subscriber.test:{target.port}/cb"
        result = delivery.post(url, b"{}", JSON)
        assert result.outcome is delivery.Outcome.DELIVERED, result.error
        assert server.targets() == [f"subscriber.test:{target.port}"]
        assert len(target.deliveries("/cb")) == 1
    finally:
        server.close()


# --- The setting --------------------------------------------------------------------------------


def test_parse_proxy_reads_scheme_host_port_and_credentials() -> None:
    proxy = netguard.parse_proxy("HTTP://User:p%3Ass@Proxy.internal:4750/")
    assert str(proxy) == "http://proxy.internal:4750"
    assert proxy.header_map == {"Proxy-Authorization": "Basic " + base64.b64encode(b"User:p:ss").decode()}
    assert str(netguard.parse_proxy("https://egress.internal")) == "https://egress.internal:443"
    assert str(netguard.parse_proxy("http://10.0.0.5")) == "http://10.0.0.5:80"
    assert netguard.parse_proxy("") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("socks5://user:hunter2@proxy:1080", "must be an http:// or https:// URL of a CONNECT proxy"),
        ("proxy.internal:3128", "must be an http:// or https:// URL"),
        ("http://", "has no host"),
        ("http://user:hunter2@proxy:3128/path", "without a path or query"),
        ("http://proxy:3128?x=1", "without a path or query"),
        ("http://proxy:99999", "is not a valid URL"),
    ],
)
def test_a_malformed_hub_outbound_proxy_stops_the_process_naming_the_setting_and_never_the_password(
    text: str, message: str
) -> None:
    with pytest.raises(ImproperlyConfigured, match=message) as refused:
        netguard.proxy_setting(text)
    assert str(refused.value).startswith("HUB_OUTBOUND_PROXY ")
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"HUB_OUTBOUND_PROXY": "socks5://hub:hunter2@proxy.internal:1080"}, "HUB_OUTBOUND_PROXY must be an http://"),
        ({"HUB_CLIENT_CERT": "/nonexistent/hub.pem"}, "HUB_CLIENT_CERT: no such file: /nonexistent/hub.pem"),
        ({"HUB_CLIENT_KEY": "/nonexistent/hub.key"}, "HUB_CLIENT_KEY is set but HUB_CLIENT_CERT is not"),
        ({"HUB_CA_BUNDLE": "/nonexistent/ca.pem"}, "HUB_CA_BUNDLE: no such file: /nonexistent/ca.pem"),
    ],
)
def test_a_process_with_a_bad_outbound_setting_stops_at_start_naming_it(variables: dict, message: str) -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "websubhub.settings", **variables}
    code = "import django; django.setup()"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    # ImproperlyConfigured, or its kind for a HUB_* value (websubhub.hub_settings.InvalidSetting)
    assert f"ImproperlyConfigured: {message}" in done.stderr or f"InvalidSetting: {message}" in done.stderr
    assert "hunter2" not in done.stderr
