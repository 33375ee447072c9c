"""The hub's own settings (HUB_*): one declaration each, read and checked in this one place.

Each setting is one line of `HubSettings` below: its kind (how a value is read and
what type it has), its default, what it must be, and what it means. Adding one is
adding a line here and a row to README.md's Configuration table (a test compares
the two).

- At start, settings.py calls `read_environment()`: every HUB_* variable is parsed,
  checked alone and with the others (lease bounds, retention days, ...), and a wrong
  value stops the process with an ImproperlyConfigured naming the setting.
- At run time, code reads `hub_settings.HUB_X` (never `django.conf.settings.HUB_X`):
  the value Django's settings hold now, checked and typed as declared, cached until
  Django's `setting_changed` (so `override_settings` and pytest-django's `settings`
  reach every reader; a test may give a value as the environment would spell it).
  A setting missing from Django's settings reads as its default, as DRF's
  `api_settings` does.

The readers of some values live in the app (ports and URL prefixes in
subscriptions/netguard.py, rates in subscriptions/ratelimit.py, signature
algorithms in subscriptions/delivery.py). Those modules read these settings, so
they are imported when a value is parsed, not when this module is.

Longer than most modules because it is the list: about fifty declarations with
the comments that explain them (`HubSettings`, the middle of the file); the
machinery before them (kinds, `Setting`) and the reader and the cross-checks
after them are each short, and belong with the list they serve.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from websubhub.logformat import log_format

if TYPE_CHECKING:
    from subscriptions.netguard import PortSet, UrlPrefix

T = TypeVar("T")
Lookup = Callable[[str], str | None]
BASE_DIR = Path(__file__).resolve().parent.parent


class InvalidSetting(ImproperlyConfigured):
    """A HUB_* value that is not what its declaration allows; the message starts with the setting's name."""


# --- Kinds: read a value given as environment text or as a Python value --------------------
# Each returns the typed value or raises ValueError saying what the value must be.

_TRUE = frozenset({"true", "on", "ok", "y", "yes", "1"})  # django-environ's spellings of true
_FALSE = frozenset({"false", "off", "no", "n", "0", ""})


def boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        try:
            return int(word) != 0  # django-environ reads any number: 0 is false
        except ValueError:
            pass
    raise ValueError("must be true or false")


def integer(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError("must be a whole number")


def number(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        import environ

        try:
            return float(environ.Env.parse_value(value, float))  # "1,5" reads as 1.5, as before
        except ValueError:
            pass
    raise ValueError("must be a number")


def text(value: object) -> str:
    if isinstance(value, str):
        return value
    raise ValueError("must be text")


def optional_text(value: object) -> str | None:
    """Text, with "" (unset) read as None."""
    if value is None:
        return None
    return text(value) or None


def path(value: object) -> Path:
    if isinstance(value, Path):
        return value
    if isinstance(value, str) and value:
        return Path(value)
    raise ValueError("must be a directory path")


def patterns(value: object) -> tuple[re.Pattern[str], ...]:
    """Regular expressions, comma-separated."""
    items = value.split(",") if isinstance(value, str) else _items(value)
    compiled = []
    for item in items:
        if isinstance(item, re.Pattern):
            compiled.append(item)
        elif item:
            try:
                compiled.append(re.compile(item))
            except re.error as exc:
                raise ValueError(f"must be regular expressions: {item!r} is not one ({exc})") from None
    return tuple(compiled)


def ports(value: object) -> PortSet:
    """Ports and ranges, `80,443,1024-65535` (subscriptions/netguard.py reads them)."""
    from subscriptions import netguard

    try:
        return netguard.parse_ports(value)  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise ValueError(f"must list ports and port ranges: {exc}") from None


def url_prefixes(value: object) -> tuple[UrlPrefix, ...]:
    """Comma-separated URL prefixes, scheme://host[:port][/path] (subscriptions/netguard.py, UrlPrefix)."""
    from subscriptions import netguard

    items = value.split(",") if isinstance(value, str) else _items(value)
    # ImproperlyConfigured naming the setting on a bad entry (the only setting of this kind).
    return netguard.url_prefixes(items, setting="HUB_PUBLISH_ALLOWED_TOPICS")


def rate(value: object) -> str:
    """A rate as subscriptions/ratelimit.py reads it: `100/10s`, `30/m`, or `off`."""
    from subscriptions import ratelimit

    value = text(value)
    ratelimit.parse_rate(value)  # InvalidRate is a ValueError saying what is wrong
    return value


def celery_rate(value: object) -> str | None:
    """Celery's own task rate limit, `100/s`, `10/m`, `1/h`; empty for none."""
    value = optional_text(value)
    if value is None:
        return None
    count, _, unit = value.partition("/")
    try:
        if unit not in ("", "s", "m", "h") or float(count) <= 0:
            raise ValueError
    except ValueError:
        raise ValueError('must be a Celery rate such as "100/s", "10/m" or "1/h"') from None
    return value


def outbound_proxy(value: object) -> str:
    """A CONNECT proxy URL as subscriptions/netguard.py reads it, `http[s]://[user:password@]host[:port]`, or empty."""
    from subscriptions import netguard

    value = text(value)
    netguard.parse_proxy(value)  # ValueError saying what is wrong, never repeating a password
    return value


def signature_algorithm(value: object) -> str:
    from subscriptions import delivery

    name = text(value).lower()
    if name not in delivery.SIGNATURE_ALGORITHMS:
        raise ValueError(f"must be one of {', '.join(delivery.SIGNATURE_ALGORITHMS)}")
    return name


def log_level(value: object) -> str:
    name = text(value).strip().upper()
    if name not in logging.getLevelNamesMapping():
        raise ValueError("must be a log level: DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return name


def line_format(value: object) -> str:
    return log_format(text(value))  # ValueError: "HUB_LOG_FORMAT must be plain or json"


def _items(value: object) -> Iterable[Any]:
    if isinstance(value, list | tuple):
        return value
    raise ValueError("must be a comma-separated list")


# --- The declaration ---------------------------------------------------------------------


def _cores(values: Mapping[str, Any], environ: Lookup) -> int:
    return os.cpu_count() or 1


def _metrics_dir(values: Mapping[str, Any], environ: Lookup) -> Path:
    # Prometheus' own variable, when a process was started with it (https://prometheus.github.io/client_python/multiprocess/)
    return Path(environ("PROMETHEUS_MULTIPROC_DIR") or values["HUB_VAR_DIR"] / "metrics")


def _positive(value: float) -> bool:
    return value > 0


def _not_negative(value: float) -> bool:
    return value >= 0


class Setting(Generic[T]):
    """One HUB_* setting: read with `kind`, `default` when unset, and it must pass `check` (saying it `must` ...)."""

    name: str

    def __init__(
        self,
        kind: Callable[[object], T],
        default: T | Callable[[Mapping[str, Any], Lookup], T],
        doc: str,
        *,
        check: Callable[[T], bool] | None = None,
        must: str = "",
        secret: bool = False,
    ) -> None:
        self.kind = kind
        self.default = default
        self.doc = doc
        self.check = check
        self.must = must
        # A refusal never repeats a secret value (a password in a URL, a token).
        self.secret = secret

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> Setting[T]: ...
    @overload
    def __get__(self, obj: HubSettings, owner: type) -> T: ...
    def __get__(self, obj: HubSettings | None, owner: type) -> Setting[T] | T:
        if obj is None:
            return self
        return obj.value(self.name)

    def read(self, value: object) -> T:
        """value (environment text or a Python value) as this setting's type; InvalidSetting when it is wrong."""
        try:
            parsed = self.kind(value)
        except ValueError as exc:
            reason = str(exc)
            if reason.startswith(self.name):
                reason = reason[len(self.name) :].strip()
            shown = f" {reason}" if reason.startswith("must") else f": {reason}"
            raise InvalidSetting(f"{self.name}{shown}{self._got(value)}") from None
        if self.check is not None and not self.check(parsed):
            raise InvalidSetting(f"{self.name} must {self.must}{self._got(value)}")
        return parsed

    def _got(self, value: object) -> str:
        return "" if self.secret else f" (got {value!r})"

    def default_value(self, values: Mapping[str, Any], environ: Lookup) -> T:
        if callable(self.default):
            return self.default(values, environ)
        return self.default


class HubSettings:
    """Every HUB_* setting. Read `hub_settings.HUB_X`; see the module's docstring."""

    # --- Storage, broker, processes
    # Where the embedded defaults keep their state (SQLite file, filesystem broker, beat schedule,
    # generated secret key, file cache, static files). Created at start-up, not when settings load.
    HUB_VAR_DIR = Setting(path, BASE_DIR / "var", "where the embedded defaults keep their state")
    # Become CELERY_WORKER_POOL and CELERY_WORKER_CONCURRENCY (settings.py): deliveries wait on the
    # network, so threads (bench/RESULTS.md compares pools).
    HUB_WORKER_POOL = Setting(text, "threads", "pool of `celery -A websubhub worker` when no -P is given")
    # (0 leaves it to Celery, which then starts one per core)
    HUB_WORKER_CONCURRENCY = Setting(integer, 32, "that worker's -c", check=_not_negative, must="be 0 or more")
    # A threads-pool worker runs as this many processes, each with its threads and its database pool:
    # one process uses one core at most. The command an operator starts is the first; it starts and
    # watches the others (websubhub/siblings.py). 1 keeps one process.
    HUB_WORKER_PROCESSES = Setting(integer, _cores, "worker processes", check=_positive, must="be 1 or more")
    # Read by gunicorn.conf.py, which loads before Django (environment_value below).
    HUB_WEB_THREADS = Setting(integer, 4, "threads per gunicorn worker", check=_positive, must="be 1 or more")
    HUB_LOG_LEVEL = Setting(log_level, "INFO", "root log level")

    # --- The hub
    HUB_URL = Setting(text, "http://127.0.0.1:8000/hub", 'the hub\'s public URL, sent as Link: <HUB_URL>; rel="hub"')
    # Leases (seconds): requests outside [MIN, MAX] are clamped; no request gets a perpetual lease.
    HUB_LEASE_SECONDS_DEFAULT = Setting(integer, 432_000, "lease when none is requested")
    HUB_LEASE_SECONDS_MIN = Setting(integer, 3_600, "shortest lease granted")
    HUB_LEASE_SECONDS_MAX = Setting(integer, 31_536_000, "longest lease granted")
    # A topic matching any of these is denied after the 202 answer (WebSub §5.2).
    HUB_TOPIC_DENYLIST = Setting(patterns, (), "regular expressions of topics whose subscriptions are denied")
    # WebSub §7.1; the list is subscriptions/delivery.py's, which signs.
    HUB_SIGNATURE_ALGORITHM = Setting(signature_algorithm, "sha256", "HMAC of X-Hub-Signature")
    # Outbound HTTP (verification, delivery, topic fetch), seconds. The read timeout bounds each
    # socket read, so a peer dripping a byte at a time would hold a thread for ever: every outbound
    # request, headers and body included, also ends at the total deadline.
    HUB_HTTP_CONNECT_TIMEOUT = Setting(number, 5.0, "outbound connect timeout", check=_positive, must="be > 0")
    HUB_HTTP_READ_TIMEOUT = Setting(number, 10.0, "outbound read timeout", check=_positive, must="be > 0")
    HUB_HTTP_TOTAL_TIMEOUT = Setting(
        number,
        lambda v, e: v["HUB_HTTP_CONNECT_TIMEOUT"] + v["HUB_HTTP_READ_TIMEOUT"],
        "wall-clock deadline of one outbound request",
        check=_positive,
        must="be > 0",
    )

    # Outbound route and identity (README, "Outbound proxy and client certificates"). An http:// or
    # https:// CONNECT proxy (an egress proxy such as Smokescreen) every verification, delivery and
    # topic fetch is tunnelled through; the proxy resolves names, so the address guard judges only
    # what the hub sees (literal addresses, localhost names, ports). PEM files of the certificate
    # presented on every outbound TLS connection (the key may follow the certificate in its file),
    # and of the CA certificates trusted instead of requests' (certifi's). Files checked at start.
    HUB_OUTBOUND_PROXY = Setting(
        outbound_proxy, "", "CONNECT proxy every outbound request is tunnelled through", secret=True
    )
    HUB_CLIENT_CERT = Setting(text, "", "PEM certificate presented on outbound TLS connections")
    HUB_CLIENT_KEY = Setting(text, "", "PEM private key of HUB_CLIENT_CERT (empty: in the certificate's file)")
    HUB_CA_BUNDLE = Setting(text, "", "PEM CA certificates trusted for outbound TLS (empty: requests' own)")

    # --- Security and limits
    # Outbound requests may only reach public addresses on these ports, checked when a URL is given
    # and again at connect time (subscriptions/netguard.py). Lifting the address check is for
    # development and tests only (scripts/run and scripts/test do).
    HUB_ALLOW_PRIVATE_ADDRESSES = Setting(boolean, False, "lift the outbound address guard")
    HUB_ALLOWED_PORTS = Setting(ports, lambda v, e: ports(_netguard_default_ports()), "ports outbound requests use")
    # Topics hub.mode=publish may name (empty: any). Pings carry no credentials, so on an open hub
    # anyone can make it fetch and fan out an allowed topic. A topic must have an entry's scheme,
    # host and port exactly and its path segments as a prefix (netguard.UrlPrefix).
    HUB_PUBLISH_ALLOWED_TOPICS = Setting(url_prefixes, (), "URL prefixes of the topics publish pings may name")
    # Admin login lockout (django-axes; settings.py makes them AXES_*): per username and address.
    HUB_LOGIN_FAILURE_LIMIT = Setting(
        integer, 5, "wrong passwords before a lockout", check=_positive, must="be 1 or more"
    )
    HUB_LOGIN_COOLOFF_MINUTES = Setting(
        integer, 15, "minutes of a lockout (0: until axes_reset)", check=_not_negative, must="be 0 or more"
    )
    # Throttles ("off" disables one): (un)subscribe requests per client address and per callback
    # host; publishing per token (per address for publish pings on /hub).
    HUB_THROTTLE_SUBSCRIBE = Setting(rate, "30/m", "subscribe and unsubscribe requests")
    HUB_THROTTLE_PUBLISH = Setting(rate, "100/s", "publishes")
    # A token deleted or rotated, a user deactivated or a permission withdrawn takes effect within
    # this time (at once in the process that changed it); 0 looks up every request.
    HUB_TOKEN_CACHE_SECONDS = Setting(
        number, 5.0, "seconds a process remembers an API token", check=_not_negative, must="be 0 or more"
    )
    # Becomes REST_FRAMEWORK's NUM_PROXIES (0: use the peer address).
    HUB_NUM_PROXIES = Setting(
        integer, 0, "proxies appending to X-Forwarded-For", check=_not_negative, must="be 0 or more"
    )
    # Largest content accepted or fetched for one notification, and the largest request body read at
    # all (413 above it; also Django's DATA_UPLOAD_MAX_MEMORY_SIZE). Bytes.
    HUB_MAX_CONTENT_BYTES = Setting(integer, 1_048_576, "largest notification", check=_positive, must="be 1 or more")
    HUB_MAX_REQUEST_BYTES = Setting(
        integer,
        lambda v, e: 2 * v["HUB_MAX_CONTENT_BYTES"] + 65_536,
        "largest request body read",
        check=_positive,
        must="be 1 or more",
    )
    HUB_MAX_JSON_DEPTH = Setting(integer, 64, "deepest JSON nesting accepted", check=_positive, must="be 1 or more")

    # --- Delivery
    # Exponential backoff with full jitter: retry k waits a random time up to BASE * 2**(k-1) seconds,
    # never more than BACKOFF_MAX; a delivery gets 1 + MAX_RETRIES attempts. The defaults give a first
    # retry within 2 s and attempts spread over about 31 hours (README, "Delivery").
    HUB_DELIVERY_MAX_RETRIES = Setting(
        integer, 72, "retries of a failed delivery", check=_not_negative, must="be 0 or more"
    )
    HUB_RETRY_BACKOFF_BASE = Setting(integer, 2, "backoff base (seconds)", check=_not_negative, must="be 0 or more")
    HUB_RETRY_BACKOFF_MAX = Setting(
        integer, 3_600, "backoff ceiling (seconds)", check=_not_negative, must="be 0 or more"
    )
    # A 429 or 503 with Retry-After delays the next attempt by that much, at most this (seconds).
    HUB_RETRY_AFTER_MAX = Setting(integer, 3_600, "cap on Retry-After", check=_not_negative, must="be 0 or more")
    # A wait up to this many seconds is a broker message with a countdown; a longer one waits in the
    # database, and hub.enqueue_due (beat, every HUB_ENQUEUE_INTERVAL seconds) sends it when due. So a
    # dead subscriber owed 100,000 deliveries costs no worker memory and no message held by a worker.
    HUB_BROKER_MAX_COUNTDOWN = Setting(
        integer, 30, "longest wait held by the broker", check=_not_negative, must="be 0 or more seconds"
    )
    HUB_ENQUEUE_INTERVAL = Setting(
        number, 1.0, "seconds between hub.enqueue_due runs", check=_positive, must="be a positive number of seconds"
    )
    # Shared by every worker through Redis (or the database); a subscription's own rate_limit overrides it.
    HUB_CALLBACK_RATE_LIMIT = Setting(rate, "100/10s", "deliveries per callback URL per window")
    # Circuit breaker: this many consecutive failed attempts pause a subscription (0: never); after
    # the cool-down one delivery probes it, and the first success resumes it.
    HUB_CALLBACK_FAILURE_PAUSE = Setting(integer, 5, "failures that pause", check=_not_negative, must="be 0 or more")
    HUB_CALLBACK_PAUSE_COOLDOWN = Setting(
        integer, 60, "seconds before a probe", check=_not_negative, must="be 0 or more"
    )
    # Across every worker (needs Redis; 0: no cap): a subscriber that hangs until the timeout holds
    # this many worker threads at most.
    HUB_CALLBACK_MAX_IN_FLIGHT = Setting(
        integer, 4, "requests open to one callback at once", check=_not_negative, must="be 0 or more"
    )
    # Celery's own rate_limit on the deliver task, per worker process, read when a worker starts
    # (tasks/deliver.py). Unset by default: under a backlog it collapses to about one task a second
    # (docs/celery-facts.md, celery/celery#5927); HUB_CALLBACK_RATE_LIMIT protects subscribers.
    HUB_DELIVERY_RATE_LIMIT = Setting(celery_rate, None, "Celery's rate_limit on the deliver task")

    # --- Beat
    # How often beat removes expired subscriptions and re-sends work the broker may have lost; how
    # late such work must be before it is re-sent; the delivery queue length above which deliveries
    # are not re-sent (the queue likely holds them). Each sweep first reads the hub's marker in a
    # Redis broker (one GET): a broker that lost its data gets everything owed at once.
    HUB_EXPIRE_INTERVAL = Setting(
        integer, 60, "seconds between expiry runs", check=_positive, must="be a positive number of seconds"
    )
    HUB_SWEEP_INTERVAL = Setting(
        integer, 5, "seconds between sweeps", check=_positive, must="be a positive number of seconds"
    )
    HUB_SWEEP_GRACE_SECONDS = Setting(
        integer, 120, "lateness before a re-send", check=_not_negative, must="be 0 or more"
    )
    HUB_SWEEP_MAX_QUEUE = Setting(
        integer, 1_000, "queue length cap on re-sends", check=_not_negative, must="be 0 or more"
    )
    # Retention (README, "Running it for a year"): hub.purge removes, every RETENTION_INTERVAL seconds,
    # notifications older than RETENTION_DAYS whose deliveries are all settled, with their deliveries
    # and attempts, and attempts older than ATTEMPT_RETENTION_DAYS (which may be shorter). 0 keeps.
    HUB_RETENTION_DAYS = Setting(
        integer, 30, "days notifications are kept", check=_not_negative, must="be whole days >= 0 (0: keep)"
    )
    HUB_ATTEMPT_RETENTION_DAYS = Setting(
        integer,
        lambda v, e: v["HUB_RETENTION_DAYS"],
        "days attempt logs are kept",
        check=_not_negative,
        must="be whole days >= 0 (0: keep)",
    )
    HUB_RETENTION_INTERVAL = Setting(
        integer, 600, "seconds between purges", check=_positive, must="be a positive number of seconds"
    )

    # --- Metrics and logs
    # Prometheus multiprocess mode (README, "Metrics"): every process of this machine writes its
    # counters to files here and /metrics adds them up; subscriptions/metrics/process.py creates it
    # and exports it as PROMETHEUS_MULTIPROC_DIR (https://prometheus.github.io/client_python/multiprocess/).
    HUB_METRICS_DIR = Setting(path, _metrics_dir, "directory of the Prometheus multiprocess files")
    # When set, GET /metrics (and manage.py hub_metrics_server) need `Authorization: Bearer <token>`.
    HUB_METRICS_TOKEN = Setting(text, "", "bearer token of /metrics", secret=True)
    # One line per record: plain text, or one JSON object per line (websubhub/logformat.py).
    HUB_LOG_FORMAT = Setting(line_format, "plain", "plain or json log lines")

    # --- Admin
    # The dashboard lists a subscription as needing attention when more than this percentage of its
    # deliveries attempted in the last hour failed or are being retried.
    HUB_ADMIN_ATTENTION_FAILURE_RATE = Setting(
        number,
        10.0,
        "failure percentage that needs attention",
        check=lambda rate: 0 <= rate < 100,
        must="be a percentage from 0 up to (not including) 100",
    )

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def value(self, name: str) -> Any:
        """The setting's value in Django's settings now (its default when absent), checked."""
        try:
            return self._cache[name]
        except KeyError:
            pass
        setting = declared()[name]
        if hasattr(django_settings, name):
            value = setting.read(getattr(django_settings, name))
        else:
            value = setting.default_value(_Values(self.value), os.environ.get)
        self._cache[name] = value
        return value

    def reload(self) -> None:
        self._cache.clear()


class _Values(Mapping[str, Any]):
    """Settings by name, each read when asked: for defaults that depend on other settings."""

    def __init__(self, read: Callable[[str], Any]) -> None:
        self._read = read

    def __getitem__(self, name: str) -> Any:
        return self._read(name)

    def __iter__(self) -> Any:
        return iter(declared())

    def __len__(self) -> int:
        return len(declared())


def _netguard_default_ports() -> str:
    from subscriptions import netguard

    return netguard.DEFAULT_ALLOWED_PORTS


def declared() -> dict[str, Setting[Any]]:
    """Every declared setting by name, in declaration order."""
    return {name: item for name, item in vars(HubSettings).items() if isinstance(item, Setting)}


def read_environment(environ: Lookup = os.environ.get) -> dict[str, Any]:
    """Every HUB_* setting from the environment, checked alone and together; InvalidSetting names the setting."""
    values: dict[str, Any] = {}
    for name, setting in declared().items():
        raw = environ(name)
        values[name] = setting.default_value(values, environ) if raw is None else setting.read(raw)
    _check_together(values, environ)
    return values


def environment_value(name: str, environ: Lookup = os.environ.get) -> Any:
    """One setting from the environment (for gunicorn.conf.py, which reads its own before Django starts)."""
    setting = declared()[name]
    raw = environ(name)
    if raw is not None:
        return setting.read(raw)
    return setting.default_value(_Values(lambda other: environment_value(other, environ)), environ)


def _check_together(values: Mapping[str, Any], environ: Lookup) -> None:
    """The rules that tie settings to each other."""
    if (
        not 0
        < values["HUB_LEASE_SECONDS_MIN"]
        <= values["HUB_LEASE_SECONDS_DEFAULT"]
        <= values["HUB_LEASE_SECONDS_MAX"]
    ):
        raise InvalidSetting("need 0 < HUB_LEASE_SECONDS_MIN <= HUB_LEASE_SECONDS_DEFAULT <= HUB_LEASE_SECONDS_MAX")
    days, attempt_days = values["HUB_RETENTION_DAYS"], values["HUB_ATTEMPT_RETENTION_DAYS"]
    if days and attempt_days > days:
        raise InvalidSetting(
            f"HUB_ATTEMPT_RETENTION_DAYS ({attempt_days}) must not exceed HUB_RETENTION_DAYS "
            f"({days}): attempts go with their deliveries after that anyway"
        )
    from subscriptions import outbound_tls

    # ImproperlyConfigured naming the setting when a file is missing, unreadable, encrypted or mismatched.
    outbound_tls.client_certificate_setting(values["HUB_CLIENT_CERT"], values["HUB_CLIENT_KEY"])
    outbound_tls.ca_bundle_setting(values["HUB_CA_BUNDLE"])
    prometheus = environ("PROMETHEUS_MULTIPROC_DIR")
    if prometheus and Path(prometheus) != values["HUB_METRICS_DIR"]:
        raise InvalidSetting("HUB_METRICS_DIR and PROMETHEUS_MULTIPROC_DIR name different directories: set one")


hub_settings = HubSettings()


def _reload(*, setting: str, **kwargs: object) -> None:
    if setting.startswith("HUB_"):
        hub_settings.reload()


setting_changed.connect(_reload, dispatch_uid="websubhub-hub-settings")
