"""The outbound address guard: refusals by URL (no DNS) and at connect time (real servers on 127.0.0.1 only).

No test here sends a packet anywhere but 127.0.0.1: `loopback_only` fails any
other connect, and host names resolve only through a stub.
"""

import ipaddress
import re
import shutil
import socket
import socketserver
import ssl
import subprocess
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from subscriptions import delivery, http, netguard, verification
from subscriptions.netguard import ForbiddenDestination, ForbiddenDestinationError, UnresolvableDestination
from tests.support.loopback import LoopbackServer

LOOPBACK_TARGETS = {"127.0.0.1", "::ffff:127.0.0.1"}
DEFAULT_PORTS = netguard.DEFAULT_ALLOWED_PORTS


# --- Fixtures -----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def guard_on(settings) -> None:
    """The guard as in production, whatever the test environment sets."""
    settings.HUB_ALLOW_PRIVATE_ADDRESSES = False
    settings.HUB_ALLOWED_PORTS = DEFAULT_PORTS


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test (not just the request) if anything tries to connect beyond 127.0.0.1."""
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if host not in LOOPBACK_TARGETS:
            raise AssertionError(f"a test tried to connect to {address!r}")
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture
def no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any name lookup fails the test: literal addresses must be judged without DNS."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"unexpected DNS lookup: {args!r}")

    monkeypatch.setattr(netguard, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


class Resolver:
    """A getaddrinfo stub: each name answers the next of its configured address lists (the last one repeats)."""

    def __init__(self) -> None:
        self.answers: dict[str, list[list[str]]] = {}
        self.calls: list[str] = []

    def add(self, name: str, *answers: list[str]) -> None:
        self.answers[name] = list(answers)

    def __call__(self, host: str, port: int, family: int = 0, type: int = 0, *args: object) -> list[tuple]:
        self.calls.append(host)
        try:
            # A literal address answers itself, as with the real getaddrinfo.
            answers = [[str(ipaddress.ip_address(host))]]
        except ValueError:
            answers = self.answers.get(host)
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        addresses = answers.pop(0) if len(answers) > 1 else answers[0]
        infos = []
        for address in addresses:
            if ipaddress.ip_address(address).version == 6:
                infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
            else:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
        return infos


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Resolver:
    stub = Resolver()
    monkeypatch.setattr(netguard, "getaddrinfo", stub)
    return stub


@pytest.fixture
def loopback_counts_as_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let 127.0.0.1 (exactly) stand in for a public address, so connect-time tests can reach a local server."""
    real_reason = netguard.forbidden_reason

    def reason(address: object) -> str | None:
        return None if str(address) == "127.0.0.1" else real_reason(address)

    monkeypatch.setattr(netguard, "forbidden_reason", reason)


class Server(LoopbackServer):
    """An HTTP(S) server on 127.0.0.1 that counts accepted connections and records requests."""

    def __init__(self, answer: Callable[[int], tuple[int, dict[str, str]]] | None = None, tls=None) -> None:
        self.accepted = 0
        self.requests: list[dict[str, str]] = []
        self.sni: list[str | None] = []
        self.answer = answer or (lambda port: (200, {}))
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append({"path": self.path, "host": self.headers.get("Host", "")})
                status, headers = outer.answer(outer.port)
                body = b"hello"
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        class CountingServer(ThreadingHTTPServer):
            daemon_threads = True

            def server_bind(self) -> None:
                # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); not here.
                socketserver.TCPServer.server_bind(self)
                self.server_name, self.server_port = self.server_address[:2]

            def get_request(self):
                request = super().get_request()
                outer.accepted += 1
                return request

        server = CountingServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            tls.sni_callback = lambda sslobj, name, context: outer.sni.append(name)
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        self._serve(server)


@pytest.fixture
def servers() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(*args: object, **kwargs: object) -> Server:
        server = Server(*args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def client() -> Iterator[requests.Session]:
    """A fresh session built exactly as http.session() builds its own, with nothing pooled from other tests."""
    session = http.new_session()
    yield session
    session.close()


def check(url: str, **kwargs: object) -> None:
    netguard.check_url(url, allow_private=kwargs.pop("allow_private", False), **kwargs)


# --- Literal addresses, no DNS ------------------------------------------------------------


@pytest.mark.usefixtures("no_dns")
@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/", "loopback"),
        ("http://10.0.0.1/", "private"),
        ("http://172.16.0.1/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "IPv4-mapped"),
        ("http://[::ffff:7f00:1]/", "IPv4-mapped"),
        ("http://[::ffff:93.184.216.34]/", "IPv4-mapped"),
        ("http://[64:ff9b::a00:1]/", "NAT64 address of 10.0.0.1, a private"),
        ("http://[64:ff9b::7f00:1]/", "NAT64 address of 127.0.0.1, a loopback"),
        ("http://[2002:7f00:1::1]/", "6to4 address of 127.0.0.1"),
        ("http://[::a00:1]/", "IPv4-compatible"),
        ("http://[2001::1]/", "Teredo"),
        ("http://[fc00::1]/", "unique local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[ff02::1]/", "multicast"),
        ("http://[2001:db8::1]/", "documentation"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://2130706433/", "is 127.0.0.1, which is a loopback"),
        ("http://0177.0.0.1/", "is 127.0.0.1, which is a loopback"),
        ("http://0x7f000001/", "is 127.0.0.1, which is a loopback"),
        ("http://0x7f.1/", "is 127.0.0.1, which is a loopback"),
        ("http://127.1/", "is 127.0.0.1, which is a loopback"),
        ("http://127.0.0.%31/", "loopback"),
        ("http://100.64.0.1/", "shared address space"),
        ("http://198.18.0.1/", "benchmarking"),
        ("http://192.0.2.1/", "documentation"),
        ("http://224.0.0.1/", "multicast"),
        ("http://240.0.0.1/", "reserved"),
        ("http://255.255.255.255/", "broadcast"),
        ("http://localhost/", "localhost name"),
        ("http://localhost.:8080/", "localhost name"),
        ("http://foo.localhost/", "localhost name"),
        ("https://API.Foo.LOCALHOST/", "localhost name"),
    ],
)
def test_check_url_refuses_a_non_public_destination_without_dns(url: str, reason: str) -> None:
    with pytest.raises(ForbiddenDestination, match=re.escape(reason)):
        check(url)


@pytest.mark.usefixtures("no_dns")
@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.216.34/",
        "https://93.184.216.34:8443/callback?x=1",
        "https://[2606:4700::1111]/",
        "http://[64:ff9b::5db8:d822]/",  # NAT64 of 93.184.216.34
        "http://[2002:5db8:d822::1]/",  # 6to4 of 93.184.216.34
    ],
)
def test_check_url_allows_a_public_literal_address_without_dns_or_connecting(url: str) -> None:
    check(url)


@pytest.mark.usefixtures("no_dns")
@pytest.mark.parametrize("port", [22, 25, 1023])
def test_check_url_refuses_a_port_outside_the_allowed_ports(port: int) -> None:
    with pytest.raises(ForbiddenDestination, match=f"port {port} is not allowed"):
        check(f"http://93.184.216.34:{port}/")


@pytest.mark.usefixtures("no_dns")
@pytest.mark.parametrize("url", ["http://93.184.216.34:8080/", "http://93.184.216.34/", "https://93.184.216.34/"])
def test_check_url_allows_the_default_ports_and_8080(url: str) -> None:
    check(url)


@pytest.mark.usefixtures("no_dns")
def test_check_url_uses_the_allowed_ports_it_is_given() -> None:
    with pytest.raises(ForbiddenDestination, match="port 8443 is not allowed"):
        check("https://93.184.216.34:8443/", allowed_ports="443")


@pytest.mark.usefixtures("no_dns")
@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://127.0.0.1:70/_", "ftp://93.184.216.34/", "//x/"])
def test_check_url_refuses_a_scheme_other_than_http_and_https(url: str) -> None:
    with pytest.raises(ForbiddenDestination, match="only http and https"):
        check(url)


@pytest.mark.usefixtures("no_dns")
def test_check_url_with_allow_private_lets_loopback_and_localhost_through_but_still_checks_ports() -> None:
    check("http://127.0.0.1:8000/cb", allow_private=True)
    check("http://localhost:8000/cb", allow_private=True)
    with pytest.raises(ForbiddenDestination, match="port 22"):
        check("http://127.0.0.1:22/", allow_private=True)


@pytest.mark.usefixtures("no_dns")
def test_check_url_with_settings_follows_hub_allow_private_addresses(settings) -> None:
    with pytest.raises(ForbiddenDestination):
        netguard.check_url_with_settings("http://127.0.0.1:8000/")
    settings.HUB_ALLOW_PRIVATE_ADDRESSES = True
    netguard.check_url_with_settings("http://127.0.0.1:8000/")


# --- Host names (stub resolver) -----------------------------------------------------------


def test_check_url_allows_a_name_whose_every_address_is_public(resolver: Resolver) -> None:
    resolver.add("example.test", ["93.184.216.34", "2606:4700::1111"])
    check("https://example.test/callback")
    assert resolver.calls == ["example.test"]


def test_check_url_refuses_a_name_with_any_private_address(resolver: Resolver) -> None:
    resolver.add("mixed.test", ["93.184.216.34", "10.0.0.1"])
    with pytest.raises(ForbiddenDestination, match=r"mixed\.test resolves to 10\.0\.0\.1, a private"):
        check("https://mixed.test/")


def test_check_url_refuses_a_name_that_resolves_to_metadata(resolver: Resolver) -> None:
    resolver.add("metadata.test", ["169.254.169.254"])
    with pytest.raises(ForbiddenDestination, match="link-local"):
        check("http://metadata.test/")


def test_check_url_refuses_a_name_that_does_not_resolve(resolver: Resolver) -> None:
    with pytest.raises(UnresolvableDestination, match="could not be resolved"):
        check("http://nowhere.test/")


def test_check_url_looks_at_the_host_requests_will_use(resolver: Resolver) -> None:
    # urlsplit reads the host of this URL as 127.0.0.1; requests and urllib3 read evil.test.
    resolver.add("evil.test", ["10.0.0.1"])
    with pytest.raises(ForbiddenDestination, match=r"evil\.test resolves to 10\.0\.0\.1"):
        check("http://evil.test\\@127.0.0.1/")


# --- Pure parts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "forbidden"),
    [
        ("127.0.0.1", True),
        ("127.255.255.254", True),
        ("0.1.2.3", True),
        ("192.0.0.8", True),
        ("203.0.113.9", True),
        ("::ffff:0:7f00:1", True),
        ("64:ff9b:1::1", True),
        ("4000::1", True),
        ("fe80::1%eth0", True),
        ("93.184.216.34", False),
        ("8.8.8.8", False),
        ("2606:4700::1111", False),
        ("2001:4860:4860::8888", False),
    ],
)
def test_forbidden_reason_classifies_addresses(address: str, forbidden: bool) -> None:
    assert netguard.is_forbidden(address) is forbidden


def test_parse_ports_reads_single_ports_and_ranges() -> None:
    ports = netguard.parse_ports("80, 443,1024-65535")
    assert [port in ports for port in (80, 443, 1024, 8080, 65535)] == [True] * 5
    assert [port in ports for port in (0, 22, 25, 1023, 65536)] == [False] * 5
    assert str(ports) == "80,443,1024-65535"
    assert 8080 in netguard.parse_ports([80, "8000-9000"])


@pytest.mark.parametrize("spec", ["", "http", "0", "443-80", "80,70000"])
def test_parse_ports_refuses_a_malformed_spec(spec: str) -> None:
    with pytest.raises(ValueError):
        netguard.parse_ports(spec)


def test_settings_defaults_turn_the_guard_on_with_the_default_ports(settings) -> None:
    del settings.HUB_ALLOW_PRIVATE_ADDRESSES
    del settings.HUB_ALLOWED_PORTS
    assert netguard.allow_private_addresses() is False
    assert str(netguard.allowed_ports()) == DEFAULT_PORTS


# --- Connect time (real servers on 127.0.0.1) ---------------------------------------------


def test_guard_refuses_a_loopback_callback_at_connect_time(servers, client: requests.Session) -> None:
    server = servers()
    with pytest.raises(ForbiddenDestinationError, match=r"127\.0\.0\.1 is a loopback address"):
        client.get(f"http://127.0.0.1:{server.port}/callback", timeout=5, allow_redirects=False)
    assert server.accepted == 0


def test_guard_refuses_dns_rebinding_at_connect_time(servers, client: requests.Session, resolver: Resolver) -> None:
    # given: a name that is public when the callback is checked and loopback when it is used
    server = servers()
    resolver.add("rebind.test", ["93.184.216.34"], ["127.0.0.1"])
    url = f"http://rebind.test:{server.port}/callback"
    check(url)
    # when
    with pytest.raises(ForbiddenDestinationError, match=r"rebind\.test \(127\.0\.0\.1\) is a loopback address"):
        client.get(url, timeout=5, allow_redirects=False)
    # then: the guard resolved again, refused, and the server never saw a connection
    assert resolver.calls == ["rebind.test", "rebind.test"]
    assert server.accepted == 0


@pytest.mark.usefixtures("loopback_counts_as_public")
def test_guard_refuses_a_name_with_any_forbidden_address_at_connect_time(
    servers, client: requests.Session, resolver: Resolver
) -> None:
    server = servers()
    resolver.add("mixed.test", ["127.0.0.1", "::ffff:127.0.0.1"])
    with pytest.raises(ForbiddenDestinationError, match="IPv4-mapped"):
        client.get(f"http://mixed.test:{server.port}/", timeout=5)
    assert server.accepted == 0


@pytest.mark.usefixtures("loopback_counts_as_public")
def test_guard_connects_to_the_address_it_checked_and_keeps_the_host_header(
    servers, client: requests.Session, resolver: Resolver
) -> None:
    # pinned.test exists only in the stub: reaching the server proves the guard's own answer was used.
    server = servers()
    resolver.add("pinned.test", ["127.0.0.1"])
    response = client.get(f"http://pinned.test:{server.port}/path?q=1", timeout=5)
    assert response.status_code == 200
    assert server.requests == [{"path": "/path?q=1", "host": f"pinned.test:{server.port}"}]


@pytest.mark.usefixtures("loopback_counts_as_public")
def test_every_redirect_hop_of_a_topic_fetch_passes_the_guard(
    servers, client: requests.Session, resolver: Resolver
) -> None:
    # given: a "public" topic server that redirects to a name resolving to a forbidden address
    internal = servers()
    topic = servers(lambda port: (302, {"Location": f"http://internal.test:{internal.port}/secret"}))
    resolver.add("internal.test", ["::ffff:127.0.0.1"])
    # when: fetched the way topic_fetch_and_publish fetches, following redirects
    with pytest.raises(ForbiddenDestinationError, match=r"internal\.test \(::ffff:127\.0\.0\.1\) is an IPv4-mapped"):
        client.get(f"http://127.0.0.1:{topic.port}/feed", timeout=5, allow_redirects=True, stream=True)
    # then
    assert len(topic.requests) == 1
    assert internal.accepted == 0


@pytest.mark.usefixtures("loopback_counts_as_public")
def test_a_redirect_to_a_port_outside_the_allowed_ports_is_refused(servers, client: requests.Session) -> None:
    topic = servers(lambda port: (301, {"Location": "http://127.0.0.1:22/"}))
    with pytest.raises(ForbiddenDestinationError, match="port 22 is not allowed"):
        client.get(f"http://127.0.0.1:{topic.port}/feed", timeout=5, allow_redirects=True)
    assert len(topic.requests) == 1


def test_proxies_are_refused_while_the_guard_is_on(client: requests.Session) -> None:
    with pytest.raises(ForbiddenDestinationError, match="proxies"):
        client.get("http://93.184.216.34/", proxies={"http": "http://127.0.0.1:9"}, timeout=5)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for pinned.test (made with the openssl command)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
            *("-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=pinned.test"),
            *("-addext", "subjectAltName=DNS:pinned.test"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def _tls_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


@pytest.mark.usefixtures("loopback_counts_as_public")
def test_https_through_the_guard_sends_sni_and_verifies_the_certificate_for_the_original_name(
    servers, client: requests.Session, resolver: Resolver, certificate: tuple[Path, Path]
) -> None:
    server = servers(tls=_tls_context(certificate))
    resolver.add("pinned.test", ["127.0.0.1"])
    response = client.get(f"https://pinned.test:{server.port}/", timeout=5, verify=str(certificate[0]))
    assert response.status_code == 200
    assert server.sni == ["pinned.test"]
    assert server.requests[0]["host"] == f"pinned.test:{server.port}"


@pytest.mark.usefixtures("loopback_counts_as_public")
def test_https_through_the_guard_refuses_a_certificate_for_another_name(
    servers, client: requests.Session, resolver: Resolver, certificate: tuple[Path, Path]
) -> None:
    server = servers(tls=_tls_context(certificate))
    resolver.add("other.test", ["127.0.0.1"])
    with pytest.raises(requests.exceptions.SSLError):
        client.get(f"https://other.test:{server.port}/", timeout=5, verify=str(certificate[0]))
    assert server.requests == []


# --- The switch and the callers -----------------------------------------------------------


def test_with_hub_allow_private_addresses_a_request_to_127_0_0_1_goes_through(servers, settings) -> None:
    settings.HUB_ALLOW_PRIVATE_ADDRESSES = True
    server = servers()
    response = http.session().get(f"http://127.0.0.1:{server.port}/cb", timeout=5, allow_redirects=False)
    assert response.status_code == 200
    assert server.requests == [{"path": "/cb", "host": f"127.0.0.1:{server.port}"}]


def test_the_shared_session_mounts_the_guard_for_http_and_https() -> None:
    session = http.session()
    assert isinstance(session.get_adapter("http://example.test/"), netguard.GuardedAdapter)
    assert isinstance(session.get_adapter("https://example.test/"), netguard.GuardedAdapter)


def test_a_verification_to_a_refused_callback_fails_with_the_reason(servers) -> None:
    server = servers()
    answer = verification.verify(f"http://127.0.0.1:{server.port}/cb", {"hub.mode": "subscribe"}, "challenge")
    assert not answer.ok
    assert answer.reason.startswith("refused: refused by the outbound address guard: 127.0.0.1 is a loopback")
    assert server.accepted == 0


def test_a_delivery_to_a_refused_callback_is_retried_with_the_reason(servers) -> None:
    server = servers()
    result = delivery.post(f"http://127.0.0.1:{server.port}/cb", b"{}", {"Content-Type": "application/json"})
    assert result.outcome is delivery.Outcome.RETRY
    assert "loopback" in result.error
    assert server.accepted == 0
