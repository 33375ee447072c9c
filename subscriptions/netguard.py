"""The outbound-request guard: hub traffic may only reach globally routable addresses.

Two layers, both needed:

- `check_url` runs when a URL is accepted (a callback at subscribe time, a topic
  before fetching) and gives a 400-worthy reason. It parses the URL the way
  requests and urllib3 will, so both agree on the host.
- `GuardedAdapter` runs when a socket is opened: it resolves the host itself,
  checks every address, and connects to one of the addresses it checked. DNS
  rebinding (a name that answers a public address at subscribe time and
  127.0.0.1 later) and redirect hops therefore meet the same rules. The Host
  header, TLS SNI and certificate verification keep the original name.

Both are switched off by `HUB_ALLOW_PRIVATE_ADDRESSES` (development and tests
only), which restores plain requests behaviour.

Why one module of about 700 lines: it holds one rule, "where may the hub send a
request", and its parts must read a destination identically. The address tables,
the port set, the one reading of a URL (`url_target`, also used for throttle keys,
log hosts and the publish allow list) and the connect-time check are the same
decision made at two moments; split apart, the acceptance check and the socket
check could drift and a URL could pass one and mean another at the other. The
sections below (addresses, ports, the outbound proxy, URLs, URL allow lists,
connect time) each read alone, and the module touches no database and no other
hub module but the settings accessor.

With `HUB_OUTBOUND_PROXY` set, every connection is a CONNECT tunnel through
that proxy, which resolves the destination's name itself: the hub cannot vouch
for the addresses the proxy picks, so the guard judges what it can still see
(the scheme, the port, a literal address, a localhost name) at acceptance and
again before each CONNECT, and leaves DNS answers to the proxy (an egress proxy
such as Smokescreen refuses private addresses itself). The proxy's own address
is the operator's choice and is never refused.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar
from urllib.parse import unquote

import requests
from django.core.exceptions import ImproperlyConfigured
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, LocationParseError, NameResolutionError, NewConnectionError
from urllib3.util import Timeout, Url, make_headers, parse_url
from urllib3.util.connection import allowed_gai_family

from websubhub.hub_settings import hub_settings

logger = logging.getLogger(__name__)

# Tests replace this (and only this) to make a host name resolve to a chosen address.
getaddrinfo = socket.getaddrinfo

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOWED_SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
# The standard web ports plus everything unprivileged: keeps ssh (22), smtp (25) and friends out.
DEFAULT_ALLOWED_PORTS = "80,443,1024-65535"
MAX_PORT = 65535

# Characters that can make up a numeric IPv4 form that inet_aton accepts (decimal, octal, hex, 1-4 parts).
_NUMERIC_HOST = re.compile(r"[0-9a-fx.]+")


def _nets(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


# Ranges refused with a name, most specific first. Everything else must also pass
# `is_global`; this table makes the answer independent of the Python version's registry.
_IPV4_FORBIDDEN: tuple[tuple[tuple[ipaddress.IPv4Network, ...], str], ...] = (
    (_nets("255.255.255.255/32"), "the broadcast address"),
    (_nets("0.0.0.0/32"), "the unspecified address"),
    (_nets("0.0.0.0/8"), "a 'this network' address (0.0.0.0/8)"),
    (_nets("127.0.0.0/8"), "a loopback address"),
    (_nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"), "a private address (RFC 1918)"),
    (_nets("100.64.0.0/10"), "a shared address space address (RFC 6598, carrier-grade NAT)"),
    (_nets("169.254.0.0/16"), "a link-local address"),
    (_nets("192.0.0.0/24"), "an IETF protocol assignment address (192.0.0.0/24)"),
    (_nets("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"), "a documentation address"),
    (_nets("192.88.99.0/24"), "a 6to4 relay anycast address (deprecated)"),
    (_nets("198.18.0.0/15"), "a benchmarking address (RFC 2544)"),
    (_nets("224.0.0.0/4"), "a multicast address"),
    (_nets("240.0.0.0/4"), "a reserved address"),
)

_IPV6_UNSPECIFIED = ipaddress.IPv6Address("::")
_IPV6_LOOPBACK = ipaddress.IPv6Address("::1")
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # SIIT, RFC 2765
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIXTOFOUR = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")
_IETF_PROTOCOL = ipaddress.IPv6Network("2001::/23")
# Parts of 2001::/23 that IANA lists as globally reachable.
_IETF_PROTOCOL_GLOBAL = _nets(
    "2001:1::1/128", "2001:1::2/128", "2001:3::/32", "2001:4:112::/48", "2001:20::/28", "2001:30::/28"
)
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_IPV6_FORBIDDEN: tuple[tuple[tuple[ipaddress.IPv6Network, ...], str], ...] = (
    (_nets("64:ff9b:1::/48"), "a local-use NAT64 address (RFC 8215)"),
    (_nets("100::/64"), "a discard-only address"),
    (_nets("2001:2::/48"), "a benchmarking address"),
    (_nets("2001:db8::/32", "3fff::/20"), "a documentation address"),
    (_nets("fc00::/7"), "a private (unique local) address"),
    (_nets("fe80::/10"), "a link-local address"),
    (_nets("fec0::/10"), "a site-local address (deprecated)"),
    (_nets("ff00::/8"), "a multicast address"),
)


class ForbiddenDestination(ValueError):
    """A URL the hub refuses to send requests to; the message says why and is safe to show."""


class UnresolvableDestination(ForbiddenDestination):
    """The host name does not resolve, so its addresses cannot be vouched for."""


class ForbiddenDestinationError(requests.exceptions.ConnectionError):
    """The guard refused to open a connection; callers see a failed attempt with this message."""


# --- Addresses ----------------------------------------------------------------------------


def forbidden_reason(address: str | IPAddress) -> str | None:
    """Why the hub must not connect to this address (a phrase like 'a loopback address'), or None.

    Anything that is not globally routable is refused, including IPv6 forms that
    carry an IPv4 address (mapped, compatible, translated, Teredo) and NAT64 or
    6to4 addresses whose embedded IPv4 address is itself refused.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv4Address):
        return _ipv4_reason(ip)
    return _ipv6_reason(ip)


def is_forbidden(address: str | IPAddress) -> bool:
    return forbidden_reason(address) is not None


def _ipv4_reason(ip: ipaddress.IPv4Address) -> str | None:
    for networks, reason in _IPV4_FORBIDDEN:
        if any(ip in network for network in networks):
            return reason
    if not ip.is_global:
        return "not a globally routable address"
    return None


def _ipv6_reason(ip: ipaddress.IPv6Address) -> str | None:
    if ip.scope_id:
        ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
    if ip == _IPV6_UNSPECIFIED:
        return "the unspecified address"
    if ip == _IPV6_LOOPBACK:
        return "a loopback address"
    if ip in _IPV4_MAPPED:
        return _embedded("an IPv4-mapped IPv6 address", ip.ipv4_mapped, always=True)
    if ip in _IPV4_TRANSLATED:
        return _embedded("an IPv4-translated IPv6 address", _last_32_bits(ip), always=True)
    if ip in _IPV4_COMPATIBLE:
        return _embedded("an IPv4-compatible IPv6 address (deprecated)", _last_32_bits(ip), always=True)
    if ip in _NAT64:
        return _embedded("a NAT64 address", _last_32_bits(ip), always=False)
    if ip in _SIXTOFOUR:
        return _embedded("a 6to4 address", ip.sixtofour, always=False)
    if ip in _TEREDO:
        # The client address inside is obfuscated and the server can relay anywhere.
        return "a Teredo tunnel address"
    for networks, reason in _IPV6_FORBIDDEN:
        if any(ip in network for network in networks):
            return reason
    if ip in _IETF_PROTOCOL and not any(ip in network for network in _IETF_PROTOCOL_GLOBAL):
        return "an IETF protocol assignment address (2001::/23)"
    if ip not in _GLOBAL_UNICAST:
        return "a reserved address (outside the global unicast range 2000::/3)"
    if not ip.is_global:
        return "not a globally routable address"
    return None


def _last_32_bits(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)


def _embedded(kind: str, ipv4: ipaddress.IPv4Address | None, *, always: bool) -> str | None:
    """Refuse an IPv6 form that carries an IPv4 address: always, or when the IPv4 address is refused."""
    inner = _ipv4_reason(ipv4) if ipv4 is not None else None
    if inner is not None:
        return f"{kind} of {ipv4}, {inner}"
    if always:
        return f"{kind} (of {ipv4})"
    return None


# --- Ports and settings -------------------------------------------------------------------


@dataclass(frozen=True)
class PortSet:
    """Allowed ports as inclusive ranges, parsed from a spec like '80,443,1024-65535'."""

    ranges: tuple[tuple[int, int], ...]

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and any(low <= port <= high for low, high in self.ranges)

    def __str__(self) -> str:
        return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in self.ranges)


def parse_ports(spec: str | Iterable[int | str] | PortSet) -> PortSet:
    """A PortSet from '80,443,1024-65535' (or a list of ports and ranges); ValueError when malformed."""
    if isinstance(spec, PortSet):
        return spec
    if not isinstance(spec, str):
        spec = ",".join(str(item) for item in spec)
    return _parse_port_spec(spec)


@lru_cache(maxsize=16)
def _parse_port_spec(spec: str) -> PortSet:
    ranges = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        low_text, dash, high_text = item.partition("-")
        try:
            low = int(low_text)
            high = int(high_text) if dash else low
        except ValueError:
            raise ValueError(f"not a port or a port range: {item!r}") from None
        if not 1 <= low <= high <= MAX_PORT:
            raise ValueError(f"port range out of bounds (1-{MAX_PORT}): {item!r}")
        ranges.append((low, high))
    if not ranges:
        raise ValueError("no ports allowed")
    return PortSet(tuple(ranges))


def allow_private_addresses() -> bool:
    """HUB_ALLOW_PRIVATE_ADDRESSES: true turns the address guard off (development and tests only)."""
    return hub_settings.HUB_ALLOW_PRIVATE_ADDRESSES


def allowed_ports() -> PortSet:
    """HUB_ALLOWED_PORTS, default DEFAULT_ALLOWED_PORTS."""
    return hub_settings.HUB_ALLOWED_PORTS


# --- The outbound proxy -------------------------------------------------------------------


@dataclass(frozen=True)
class Proxy:
    """HUB_OUTBOUND_PROXY as read: the CONNECT proxy every outbound connection is tunnelled through."""

    # scheme, host and port only: the credentials travel in `headers`, never in a message.
    url: Url
    # Proxy-Authorization (Basic) when the setting's URL has user information; sent with each CONNECT only.
    headers: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        return str(self.url)

    @property
    def header_map(self) -> Mapping[str, str]:
        return dict(self.headers)


def parse_proxy(text: str) -> Proxy | None:
    """A Proxy from `http[s]://[user:password@]host[:port]` (None for an empty text); ValueError saying what is wrong.

    The messages never repeat the password.
    """
    text = text.strip()
    if not text:
        return None
    try:
        parsed = parse_url(text)
    except LocationParseError:
        raise ValueError("is not a valid URL") from None
    shown = parsed._replace(auth=None)
    scheme = (parsed.scheme or "").lower()
    if scheme not in ALLOWED_SCHEMES:
        raise ValueError(f"must be an http:// or https:// URL of a CONNECT proxy, not {shown}")
    host = (parsed.host or "").lower()
    if not host:
        raise ValueError(f"has no host: {shown}")
    if parsed.path not in (None, "", "/") or parsed.query is not None or parsed.fragment is not None:
        raise ValueError(f"must be scheme://[user:password@]host[:port], without a path or query: {shown}")
    headers: tuple[tuple[str, str], ...] = ()
    if parsed.auth is not None:
        user, _, password = parsed.auth.partition(":")
        basic = make_headers(proxy_basic_auth=f"{unquote(user)}:{unquote(password)}")["proxy-authorization"]
        headers = (("Proxy-Authorization", basic),)
    url = Url(scheme=scheme, host=host, port=parsed.port or DEFAULT_PORTS[scheme])
    return Proxy(url=url, headers=headers)


@lru_cache(maxsize=4)
def proxy_setting(text: str) -> Proxy | None:
    """HUB_OUTBOUND_PROXY's text read; ImproperlyConfigured naming the setting when malformed."""
    try:
        return parse_proxy(text)
    except ValueError as exc:
        raise ImproperlyConfigured(f"HUB_OUTBOUND_PROXY {exc}") from None


def outbound_proxy() -> Proxy | None:
    """HUB_OUTBOUND_PROXY, or None when the hub connects directly; ImproperlyConfigured naming it when malformed."""
    return proxy_setting(hub_settings.HUB_OUTBOUND_PROXY)


# --- URLs ---------------------------------------------------------------------------------


def check_url(
    url: str,
    *,
    allow_private: bool,
    allowed_ports: str | Iterable[int | str] | PortSet = DEFAULT_ALLOWED_PORTS,
    resolve: bool = True,
) -> None:
    """Raise ForbiddenDestination unless url is http(s), on an allowed port, to public addresses only.

    Literal addresses, including the decimal, octal, hex and short IPv4 forms
    resolvers accept, are checked without DNS; a host name is resolved and every
    address must be allowed. With allow_private, only the scheme and port are checked.
    Without resolve (requests go through HUB_OUTBOUND_PROXY, which resolves names
    itself), a name is judged by itself only: localhost names are refused.
    """
    target = url_target(url)
    scheme, host, port = target.scheme, target.host, target.port
    if scheme not in ALLOWED_SCHEMES:
        raise ForbiddenDestination(f"only http and https URLs are allowed, not {scheme or 'no scheme'}")
    ports = parse_ports(allowed_ports)
    if port not in ports:
        raise ForbiddenDestination(f"port {port} is not allowed (allowed ports: {ports})")
    if allow_private:
        return
    if _refuse_by_name(host) or not resolve:
        return
    for address in _resolve(host, port):
        reason = forbidden_reason(address)
        if reason is not None:
            raise ForbiddenDestination(
                f"host {host} resolves to {address}, {reason}; the hub does not send requests there"
            )


def check_url_with_settings(url: str) -> None:
    """check_url with HUB_ALLOW_PRIVATE_ADDRESSES and HUB_ALLOWED_PORTS; names unresolved through HUB_OUTBOUND_PROXY."""
    check_url(
        url, allow_private=allow_private_addresses(), allowed_ports=allowed_ports(), resolve=outbound_proxy() is None
    )


@dataclass(frozen=True)
class Target:
    """Where a request for a URL really goes, read the way requests and urllib3 read it.

    `host` is lower case, IDNA-encoded, and an IPv6 literal has no brackets;
    `port` is explicit (the scheme's default when the URL names none); `path`
    is the request line's path, percent-encoded as it is sent, without the
    query. For a scheme other than http and https, host and path are empty and
    port is 0: the caller refuses it by its scheme.
    """

    scheme: str
    host: str
    port: int
    path: str


def url_target(url: str) -> Target:
    """The one reading of a URL for every decision about where it leads; ForbiddenDestination when unreadable.

    urllib.parse disagrees with urllib3 on URLs such as `http://a\\@b/`
    (urlsplit: host b; urllib3, after requests' normalisation: host a), so a
    check, a throttle or a log line that used urlsplit would judge a host the
    request never goes to.
    """
    try:
        scheme = parse_url(url).scheme or ""
    except LocationParseError:
        raise ForbiddenDestination("not a valid URL") from None
    scheme = scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        return Target(scheme, "", 0, "")
    prepared = requests.PreparedRequest()
    try:
        # Percent-encoding, IDNA and backslashes are normalised here, before urllib3 picks the host.
        prepared.prepare_url(url, None)
        parsed = parse_url(prepared.url or "")
    except (requests.RequestException, LocationParseError, ValueError) as exc:
        raise ForbiddenDestination(f"not a valid URL: {exc}") from None
    host = (parsed.host or "").strip("[]").lower()
    if not host:
        raise ForbiddenDestination("the URL has no host")
    # requests sends path_url as it stands (urllib3 only escapes invalid characters): dot segments that
    # arrived percent-encoded are sent, not resolved, so this is the path to judge.
    path = prepared.path_url.partition("?")[0] or "/"
    return Target(scheme, host, parsed.port or DEFAULT_PORTS[scheme], path)


# --- URL allow lists ----------------------------------------------------------------------

_DOT_SEGMENTS = frozenset({".", ".."})


def _path_segments(path: str) -> list[str]:
    """A path's segments after percent-decoding, so `%2F` and `%2e%2e` count as what a server may read them as."""
    return unquote(path).split("/")[1:]


@dataclass(frozen=True)
class UrlPrefix:
    """One entry of a URL allow list such as HUB_PUBLISH_ALLOWED_TOPICS.

    A URL is admitted when its scheme, host and port (as `url_target` reads
    them) equal the entry's, and its path starts with the entry's whole path
    segments: `/feeds` admits `/feeds`, `/feeds/` and `/feeds/a`, never
    `/feedsevil`. A path with a `.` or `..` segment is admitted only by an entry
    without a path, since the server would resolve it, possibly out of the prefix.
    """

    text: str
    scheme: str
    host: str
    port: int
    segments: tuple[str, ...]

    def __str__(self) -> str:
        return self.text

    def admits(self, target: Target) -> bool:
        if (target.scheme, target.host, target.port) != (self.scheme, self.host, self.port):
            return False
        if not self.segments:
            return True
        segments = _path_segments(target.path)
        if _DOT_SEGMENTS.intersection(segments):
            return False
        return tuple(segments[: len(self.segments)]) == self.segments


def parse_url_prefix(text: str) -> UrlPrefix:
    """An allow-list entry from `https://host[:port][/path]`; ValueError saying what is wrong."""
    try:
        target = url_target(text)
    except ForbiddenDestination as exc:
        raise ValueError(f"{text!r} is {exc}") from None
    if target.scheme not in ALLOWED_SCHEMES:
        raise ValueError(f"{text!r} is not an http:// or https:// URL")
    prepared = requests.PreparedRequest()
    prepared.prepare_url(text, None)  # url_target succeeded, so this does too
    parsed = parse_url(prepared.url or "")
    if parsed.auth is not None:
        raise ValueError(f"{text!r} has user information before its host; write scheme://host[:port]/path")
    if parsed.query is not None or parsed.fragment is not None:
        raise ValueError(f"{text!r} has a query or fragment; an entry is scheme://host[:port]/path")
    segments = _path_segments(target.path)
    if _DOT_SEGMENTS.intersection(segments):
        raise ValueError(f"{text!r} has a '.' or '..' path segment")
    while segments and not segments[-1]:
        segments.pop()  # `/feeds/` and `/feeds` name the same prefix
    return UrlPrefix(text, target.scheme, target.host, target.port, tuple(segments))


def url_prefixes(entries: Iterable[str | UrlPrefix], *, setting: str) -> tuple[UrlPrefix, ...]:
    """The parsed entries of a URL allow-list setting; ImproperlyConfigured naming the setting on a bad entry."""
    parsed = []
    for entry in entries:
        if isinstance(entry, UrlPrefix):
            parsed.append(entry)
            continue
        if not entry.strip():
            continue
        try:
            parsed.append(parse_url_prefix(entry.strip()))
        except ValueError as exc:
            raise ImproperlyConfigured(f"{setting}: {exc}") from None
    return tuple(parsed)


def url_admitted(url: str, prefixes: Iterable[UrlPrefix]) -> bool:
    """Whether any prefix admits url; ForbiddenDestination when url cannot be read."""
    target = url_target(url)
    return any(prefix.admits(target) for prefix in prefixes)


def literal_address(host: str) -> IPAddress | None:
    """The address a host written as an IP literal stands for, in any form inet_aton accepts; else None."""
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.strip("[]"))
        except ValueError:
            raise ForbiddenDestination(f"host {host} is not a valid IPv6 address") from None
    candidate = host.rstrip(".").lower()
    if not _NUMERIC_HOST.fullmatch(candidate):
        return None
    try:
        # inet_aton, like the system resolver, reads 2130706433, 0177.0.0.1, 0x7f.1 and 127.1 as 127.0.0.1.
        return ipaddress.IPv4Address(socket.inet_aton(candidate))
    except OSError:
        return None


def _refuse_by_name(host: str) -> bool:
    """Refuse a host that names a forbidden address by itself (a literal, a localhost name); True for a literal."""
    literal = literal_address(host)
    if literal is not None:
        reason = forbidden_reason(literal)
        if reason is not None:
            shown = "" if str(literal) == host else f" is {literal}, which"
            raise ForbiddenDestination(f"host {host}{shown} is {reason}; the hub does not send requests there")
        return True
    _refuse_local_name(host)
    return False


def _refuse_local_name(host: str) -> None:
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        raise ForbiddenDestination(f"host {host} is a localhost name; the hub does not send requests there")


def _resolve(host: str, port: int, family: int = socket.AF_UNSPEC) -> list[IPAddress]:
    try:
        infos = getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnresolvableDestination(f"host {host} could not be resolved ({exc})") from None
    if not infos:
        raise UnresolvableDestination(f"host {host} has no addresses")
    return [ipaddress.ip_address(info[4][0]) for info in infos]


# --- Connect time -------------------------------------------------------------------------


class _Refused(NewConnectionError):
    """The guard refused the connection (urllib3 side; the adapter re-raises ForbiddenDestinationError)."""

    def __init__(self, conn: HTTPConnection, reason: str) -> None:
        self.reason = reason
        super().__init__(conn, reason)


class _GuardedConnectionMixin:
    """Resolve the host, check every address, and connect only to an address that was checked."""

    host: str
    port: int
    timeout: Any
    source_address: tuple[str, int] | None
    socket_options: Any
    _dns_host: str

    def _new_conn(self) -> socket.socket:
        if allow_private_addresses():
            return super()._new_conn()  # type: ignore[misc]
        tunnel_host = getattr(self, "_tunnel_host", None)
        if tunnel_host is not None:
            return self._new_tunnel_conn(tunnel_host, getattr(self, "_tunnel_port", None) or 0)
        conn: Any = self
        if self.port not in allowed_ports():
            raise self._refuse(f"port {self.port} is not allowed (allowed ports: {allowed_ports()})")
        host = self._dns_host.strip("[]")
        try:
            infos = getaddrinfo(host, self.port, allowed_gai_family(), socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, conn, exc) from exc
        if not infos:
            raise NameResolutionError(self.host, conn, socket.gaierror("no addresses"))
        for *_, sockaddr in infos:
            reason = forbidden_reason(sockaddr[0])
            if reason is not None:
                shown = sockaddr[0] if sockaddr[0] == host else f"{host} ({sockaddr[0]})"
                raise self._refuse(f"{shown} is {reason}")
        sock = self._connect_first(infos)
        sys.audit("http.client.connect", self, self.host, self.port)
        return sock

    def _new_tunnel_conn(self, destination: str, port: int) -> socket.socket:
        """Connect to HUB_OUTBOUND_PROXY, which will tunnel to destination:port: judge what the hub can see of it.

        The proxy resolves the destination, so there are no addresses to check
        here: a literal address, a localhost name and the port are. The proxy's
        own address (this connection's host) is not checked: the operator chose it.
        """
        if port not in allowed_ports():
            raise self._refuse(f"port {port} is not allowed (allowed ports: {allowed_ports()})")
        host = destination.strip("[]")
        try:
            _refuse_by_name(host)
        except ForbiddenDestination as exc:
            raise self._refuse(str(exc)) from None
        return super()._new_conn()  # type: ignore[misc]

    def _refuse(self, reason: str) -> _Refused:
        logger.warning("outbound connection refused by the address guard: %s", reason)
        return _Refused(self, f"refused by the outbound address guard: {reason}")  # type: ignore[arg-type]

    def _connect_first(self, infos: list[tuple[Any, ...]]) -> socket.socket:
        """Connect to the checked addresses in order, as urllib3's create_connection does with its own."""
        conn: Any = self
        timeout = Timeout.resolve_default_timeout(self.timeout)
        error: OSError | None = None
        for family, socktype, proto, _, sockaddr in infos:
            sock = socket.socket(family, socktype, proto)
            try:
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                sock.settimeout(timeout)
                if self.source_address:
                    sock.bind(self.source_address)
                sock.connect(sockaddr)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            return sock
        if isinstance(error, TimeoutError):
            raise ConnectTimeoutError(conn, f"Connection to {self.host} timed out. (connect timeout={timeout})")
        raise NewConnectionError(conn, f"Failed to establish a new connection: {error}")


class GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    pass


class GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    pass


class GuardedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = GuardedHTTPConnection


class GuardedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = GuardedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections go only to addresses the guard checked at connect time.

    Every request through a session with this adapter mounted, each redirect hop
    included, is checked. A refusal raises ForbiddenDestinationError (a requests
    ConnectionError). With HUB_ALLOW_PRIVATE_ADDRESSES it behaves as HTTPAdapter.
    """

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": GuardedHTTPConnectionPool,
            "https": GuardedHTTPSConnectionPool,
        }

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        # A request's own `proxies=` would forward it past the guard, which would check the proxy, not the
        # destination. HUB_OUTBOUND_PROXY does not come this way: the pools tunnel through it (http_transport.py).
        if not allow_private_addresses():
            raise ForbiddenDestinationError("outbound proxies are not allowed while the address guard is on")
        return super().proxy_manager_for(proxy, **proxy_kwargs)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        try:
            return super().send(request, *args, **kwargs)
        except requests.exceptions.ConnectionError as exc:
            refused = _refusal_in(exc)
            if refused is None:
                raise
            raise ForbiddenDestinationError(refused.reason, request=request) from None


_E = TypeVar("_E", bound=BaseException)


def _refusal_in(exc: requests.exceptions.ConnectionError) -> _Refused | None:
    """The guard's refusal behind a requests error, if it is one."""
    return cause_of(exc, _Refused)


def cause_of(exc: BaseException, kind: type[_E]) -> _E | None:
    """The first error of `kind` in the chain behind exc (requests wraps urllib3's MaxRetryError,
    ProxyError and ProtocolError, which wrap the connection's own error)."""
    seen: set[int] = set()
    pending: list[object] = [exc]
    while pending:
        candidate = pending.pop(0)
        if not isinstance(candidate, BaseException) or id(candidate) in seen:
            continue
        seen.add(id(candidate))
        if isinstance(candidate, kind):
            return candidate
        pending.extend(candidate.args)
        # Not __context__: an error merely being handled nearby is no cause.
        for name in ("reason", "original_error", "__cause__"):
            pending.append(getattr(candidate, name, None))
    return None
