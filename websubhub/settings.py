"""Settings for the websubhub project.

Everything that differs between machines comes from the environment (see
README.md, "Configuration", and .env.example). With nothing set, the hub runs on
SQLite and Celery's filesystem transport under ./var, so it needs no service.
"""

import os
import secrets
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

# The lists and parsers these settings are checked with have one home each, beside the code that
# uses them (the allow list's parser is the outbound guard's, so the setting and the requests read
# URLs alike). Lower-case module names, so that Django does not take the lists for settings.
from subscriptions import delivery as _delivery
from subscriptions import http as _http
from subscriptions import netguard as _netguard
from subscriptions.netguard import url_prefixes
from websubhub.queues import ALL_QUEUES, QueueName, TaskName

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

# Where the embedded defaults keep their state (SQLite file, filesystem broker,
# beat schedule, generated secret key). Ignored by git. Created at start-up
# (SubscriptionsConfig.ready()), not here: importing settings changes nothing.
VAR_DIR = Path(env.str("HUB_VAR_DIR", default=str(BASE_DIR / "var")))

# Prometheus multiprocess mode (README, "Metrics"): every process of this machine
# (web, Celery workers) writes its counters to files here and /metrics adds them
# up. subscriptions/metrics/process.py creates it and exports it as
# PROMETHEUS_MULTIPROC_DIR before the hub's metrics exist.
# https://prometheus.github.io/client_python/multiprocess/
HUB_METRICS_DIR = Path(
    env.str("HUB_METRICS_DIR", default=os.environ.get("PROMETHEUS_MULTIPROC_DIR") or str(VAR_DIR / "metrics"))
)
if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]) != HUB_METRICS_DIR:
    raise ImproperlyConfigured("HUB_METRICS_DIR and PROMETHEUS_MULTIPROC_DIR name different directories: set one")
# When set, GET /metrics (and manage.py hub_metrics_server) need `Authorization: Bearer <token>`.
HUB_METRICS_TOKEN = env.str("HUB_METRICS_TOKEN", default="")


DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is required when DJANGO_DEBUG is off (scripts/run makes one for development)"
        )
    SECRET_KEY = "insecure-development-key-" + secrets.token_urlsafe(16)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
# Origins allowed to POST the admin's forms when it is served behind a proxy
# under another name (https://hub.example.org).
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# Security (Django's deployment checklist). Behind a TLS-terminating proxy, set
# DJANGO_SECURE_PROXY_SSL_HEADER=true so Django knows the request was https.
if env.bool("DJANGO_SECURE_PROXY_SSL_HEADER", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
_HTTPS = env.str("HUB_URL", default="").lower().startswith("https://")
SESSION_COOKIE_SECURE = _HTTPS
CSRF_COOKIE_SECURE = _HTTPS
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=_HTTPS)
# Health checks and metrics are probed over plain HTTP from inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz/?$", r"^readyz/?$", r"^metrics/?$"]
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31_536_000 if _HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=_HTTPS)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=_HTTPS)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    # django.contrib.admin, with the dashboard as the admin's index (subscriptions/admin_site.py).
    "subscriptions.admin_site.HubAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "subscriptions",
]

MIDDLEWARE = [
    "subscriptions.middleware.RequestSizeLimitMiddleware",
    # A database that refuses connections gets 503 + Retry-After, not 500.
    "subscriptions.middleware.DatabaseUnavailableMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Turns a login refused by the lockout into its 429 page; last, as django-axes asks.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    # Refuses a locked-out username and address before any password is checked (django-axes).
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "websubhub.urls"
WSGI_APPLICATION = "websubhub.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# https://django-environ.readthedocs.io/en/latest/types.html#environ-env-db-url
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the worker write to one SQLite file: wait for the lock
    # instead of failing with "database is locked", and let readers run beside a writer.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not memory, so that a Celery worker started by the tests shares it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test_db.sqlite3")}
    DATABASE_POOL_MAX_SIZE = 0  # one file, no server connections to bound
else:
    # PostgreSQL allows max_connections (100 by default) for everyone. Each
    # process keeps a pool of at most DATABASE_POOL_MAX_SIZE connections, whatever
    # its thread count: a thread borrows one for a request or a task and returns
    # it when Django closes the connection (end of request, end of task, and
    # before a delivery or a verification waits on the network). A thread that
    # finds them all in use waits up to DATABASE_POOL_TIMEOUT seconds, then gets
    # an OperationalError: 503 on the web, a retry for a task. README, "Database
    # connections", gives the sizing rule. 0 turns the pool off (for a pooler
    # such as PgBouncer): each thread then keeps its own connection.
    # https://docs.djangoproject.com/en/5.2/ref/databases/#connection-pool
    # The default 4 covers a web process's threads, and a worker's 32 threads
    # hold one only for the short spells of database work in each task.
    DATABASE_POOL_MAX_SIZE = env.int("DATABASE_POOL_MAX_SIZE", default=4)
    DATABASE_POOL_TIMEOUT = env.float("DATABASE_POOL_TIMEOUT", default=5.0)
    if DATABASE_POOL_MAX_SIZE < 0:
        raise ImproperlyConfigured("DATABASE_POOL_MAX_SIZE must be 0 (no pool) or a positive number of connections")
    if not DATABASE_POOL_TIMEOUT > 0:
        raise ImproperlyConfigured("DATABASE_POOL_TIMEOUT must be a positive number of seconds")
    # Seconds a thread keeps its connection between requests and tasks. Django
    # refuses persistent connections with a pool: the pool is what keeps them.
    _conn_max_age = env.int("DATABASE_CONN_MAX_AGE", default=0 if DATABASE_POOL_MAX_SIZE else 60)
    if DATABASE_POOL_MAX_SIZE and _conn_max_age != 0:
        raise ImproperlyConfigured(
            "DATABASE_CONN_MAX_AGE must be 0 or unset while the connection pool is on; "
            "set DATABASE_POOL_MAX_SIZE=0 to keep per-thread connections instead"
        )
    DATABASES["default"]["CONN_MAX_AGE"] = _conn_max_age
    # Without a pool, Django checks a kept connection before reusing it. With one,
    # a check of each connection the pool lends costs a round trip per request and
    # two per delivery (borrowed again after the POST): off by default, so after a
    # database restart each pooled connection fails its first use once (the web
    # answers 503, a task retries) and is then replaced. DATABASE_POOL_CHECK=true
    # checks every lend instead.
    DATABASE_POOL_CHECK = env.bool("DATABASE_POOL_CHECK", default=False)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = DATABASE_POOL_CHECK if DATABASE_POOL_MAX_SIZE else True
    if DATABASE_POOL_MAX_SIZE:
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            # One connection stays open while idle (a prefork child, or a quiet web
            # process, needs no more); the others close after psycopg_pool's max_idle.
            "min_size": 1,
            "max_size": DATABASE_POOL_MAX_SIZE,
            "timeout": DATABASE_POOL_TIMEOUT,
        }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# One time format with seconds everywhere the admin shows a time (websubhub/formats/en/formats.py).
FORMAT_MODULE_PATH = ["websubhub.formats"]

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# WhiteNoise serves the admin's files from the app directories when they have
# not been collected, so the embedded run needs no collectstatic step.
WHITENOISE_USE_FINDERS = True

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["subscriptions.api.parsers.SafeJSONParser"],
    # `Authorization: Token <key>` (manage.py hub_token), or a staff login's session.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "subscriptions.api.authentication.RememberingTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Every view names its permission; anything that forgets is staff-only.
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # One JSON shape for every refusal: {"detail": "...", "errors": {field: [...]}}.
    "EXCEPTION_HANDLER": "subscriptions.api.errors.exception_handler",
    # Proxies in front of the hub that append to X-Forwarded-For (0: use the peer address).
    "NUM_PROXIES": env.int("HUB_NUM_PROXIES", default=0),
}

# OpenAPI 3 at /api/schema/, Swagger UI at /api/docs/ (assets served locally).
# https://drf-spectacular.readthedocs.io/en/latest/settings.html
SPECTACULAR_SETTINGS = {
    "TITLE": "websubhub API",
    "DESCRIPTION": (
        "A WebSub hub and webhook fan-out service. `POST /hub` is the WebSub endpoint (form-encoded, open); "
        "the JSON API under /api/ needs `Authorization: Token <key>` from `manage.py hub_token`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "SubscriptionStateEnum": "subscriptions.models.Subscription.State",
        "SubscriptionRequestStateEnum": "subscriptions.models.SubscriptionRequest.State",
        "DeliveryStatusEnum": "subscriptions.models.Delivery.Status",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "subscriptions.api.schema.add_websub_endpoint",
    ],
}

# The cache holds throttling counters, shared by every web process: Redis when
# REDIS_URL is set, else files under var/ (one machine).
if env.str("REDIS_URL", default=""):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": env.str("REDIS_URL"),
            "KEY_PREFIX": "hub",
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

# --- The hub -----------------------------------------------------------------

# The hub's public URL, sent to subscribers as `Link: <HUB_URL>; rel="hub"`.
HUB_URL = env.str("HUB_URL", default="http://127.0.0.1:8000/hub")

# Leases (seconds): requests outside [MIN, MAX] are clamped; no request gets a
# perpetual lease.
HUB_LEASE_SECONDS_DEFAULT = env.int("HUB_LEASE_SECONDS_DEFAULT", default=432_000)
HUB_LEASE_SECONDS_MIN = env.int("HUB_LEASE_SECONDS_MIN", default=3_600)
HUB_LEASE_SECONDS_MAX = env.int("HUB_LEASE_SECONDS_MAX", default=31_536_000)
if not 0 < HUB_LEASE_SECONDS_MIN <= HUB_LEASE_SECONDS_DEFAULT <= HUB_LEASE_SECONDS_MAX:
    raise ImproperlyConfigured("need 0 < HUB_LEASE_SECONDS_MIN <= HUB_LEASE_SECONDS_DEFAULT <= HUB_LEASE_SECONDS_MAX")

# Regular expressions (comma-separated); a topic matching any of them is denied
# after the 202 answer (WebSub §5.2).
HUB_TOPIC_DENYLIST = [p for p in env.list("HUB_TOPIC_DENYLIST", default=[]) if p]

# HMAC algorithm of X-Hub-Signature: sha1, sha256, sha384 or sha512 (WebSub §7.1).
HUB_SIGNATURE_ALGORITHM = env.str("HUB_SIGNATURE_ALGORITHM", default="sha256").lower()
if HUB_SIGNATURE_ALGORITHM not in _delivery.SIGNATURE_ALGORITHMS:
    raise ImproperlyConfigured(f"HUB_SIGNATURE_ALGORITHM must be one of {', '.join(_delivery.SIGNATURE_ALGORITHMS)}")

# Outbound requests (verification, delivery, topic fetch) may only reach public
# addresses on these ports, checked when a URL is given and again at connect
# time. HUB_ALLOW_PRIVATE_ADDRESSES=true lifts the address check: development
# and tests only (scripts/run and scripts/test set it).
HUB_ALLOW_PRIVATE_ADDRESSES = env.bool("HUB_ALLOW_PRIVATE_ADDRESSES", default=False)
HUB_ALLOWED_PORTS = env.str("HUB_ALLOWED_PORTS", default=_netguard.DEFAULT_ALLOWED_PORTS)

# Outbound HTTP (verification, delivery, topic fetch): seconds.
HUB_HTTP_CONNECT_TIMEOUT = env.float("HUB_HTTP_CONNECT_TIMEOUT", default=5.0)
HUB_HTTP_READ_TIMEOUT = env.float("HUB_HTTP_READ_TIMEOUT", default=10.0)
# The read timeout bounds each socket read, so a peer dripping a byte at a time
# holds a thread for ever: every outbound request, headers and body included,
# also ends at this wall-clock deadline.
HUB_HTTP_TOTAL_TIMEOUT = env.float("HUB_HTTP_TOTAL_TIMEOUT", default=HUB_HTTP_CONNECT_TIMEOUT + HUB_HTTP_READ_TIMEOUT)
if not HUB_HTTP_CONNECT_TIMEOUT > 0 or not HUB_HTTP_READ_TIMEOUT > 0 or not HUB_HTTP_TOTAL_TIMEOUT > 0:
    raise ImproperlyConfigured("HUB_HTTP_CONNECT_TIMEOUT, HUB_HTTP_READ_TIMEOUT and HUB_HTTP_TOTAL_TIMEOUT must be > 0")

# Outbound route and identity (README, "Outbound proxy and client certificates"), each checked
# here so that a mistake stops the process at start. HUB_OUTBOUND_PROXY: an http:// or https://
# CONNECT proxy (an egress proxy such as Smokescreen) every verification, delivery and topic fetch
# is tunnelled through; the proxy resolves names, so the address guard judges only what the hub
# sees (literal addresses, localhost names, ports). HUB_CLIENT_CERT and HUB_CLIENT_KEY: PEM files
# of the certificate presented on every outbound TLS connection (the key may be in the cert's file).
# HUB_CA_BUNDLE: PEM CA certificates trusted for outbound TLS instead of requests' (certifi's).
HUB_OUTBOUND_PROXY = env.str("HUB_OUTBOUND_PROXY", default="")
_netguard.proxy_setting(HUB_OUTBOUND_PROXY)
HUB_CLIENT_CERT = env.str("HUB_CLIENT_CERT", default="")
HUB_CLIENT_KEY = env.str("HUB_CLIENT_KEY", default="")
_http.client_certificate_setting(HUB_CLIENT_CERT, HUB_CLIENT_KEY)
HUB_CA_BUNDLE = env.str("HUB_CA_BUNDLE", default="")
_http.ca_bundle_setting(HUB_CA_BUNDLE)

# Largest content the hub accepts or fetches for one notification (bytes), and
# the largest request body it reads at all (413 above it).
HUB_MAX_CONTENT_BYTES = env.int("HUB_MAX_CONTENT_BYTES", default=1_048_576)
HUB_MAX_REQUEST_BYTES = env.int("HUB_MAX_REQUEST_BYTES", default=2 * HUB_MAX_CONTENT_BYTES + 65_536)
DATA_UPLOAD_MAX_MEMORY_SIZE = HUB_MAX_REQUEST_BYTES
# JSON bodies nested deeper than this are refused (400).
HUB_MAX_JSON_DEPTH = env.int("HUB_MAX_JSON_DEPTH", default=64)

# Throttles (DRF's "N/s", "N/m", "N/h", "N/d"; "off" disables one): subscribe
# and unsubscribe requests per client address and per callback host, publishing
# per token (per address for publish pings on /hub).
HUB_THROTTLE_SUBSCRIBE = env.str("HUB_THROTTLE_SUBSCRIBE", default="30/m")
HUB_THROTTLE_PUBLISH = env.str("HUB_THROTTLE_PUBLISH", default="100/s")
# Seconds a process remembers an API token's user and permissions (0: look them up
# on every request). A token deleted or rotated, a user deactivated or a permission
# withdrawn takes effect within this time (at once in the process that changed it).
HUB_TOKEN_CACHE_SECONDS = env.float("HUB_TOKEN_CACHE_SECONDS", default=5.0)

# URL prefixes whose topics may be published with hub.mode=publish on /hub
# (comma-separated; empty allows any topic URL). Pings carry no credentials, so
# on an open hub anyone can make it fetch and fan out an allowed topic. Each
# entry is parsed here, so a bad one stops the process at start: a topic must
# have the entry's scheme, host and port exactly and its path segments as a
# prefix (subscriptions/netguard.py, UrlPrefix).
HUB_PUBLISH_ALLOWED_TOPICS = url_prefixes(
    env.list("HUB_PUBLISH_ALLOWED_TOPICS", default=[]), setting="HUB_PUBLISH_ALLOWED_TOPICS"
)

# Delivery retries: exponential backoff with full jitter. Retry k (1,
# 2, ...) waits a random time up to HUB_RETRY_BACKOFF_BASE * 2**(k-1) seconds,
# never more than HUB_RETRY_BACKOFF_MAX; a delivery gets 1 + HUB_DELIVERY_MAX_RETRIES
# attempts. The defaults give a first retry within 2 s and attempts spread over
# about 31 hours (at least 24 hours in 99.9% of cases): see README, "Delivery".
HUB_DELIVERY_MAX_RETRIES = env.int("HUB_DELIVERY_MAX_RETRIES", default=72)
HUB_RETRY_BACKOFF_BASE = env.int("HUB_RETRY_BACKOFF_BASE", default=2)
HUB_RETRY_BACKOFF_MAX = env.int("HUB_RETRY_BACKOFF_MAX", default=3_600)
# A 429 or 503 with Retry-After delays the next attempt by that much, at most this (seconds).
HUB_RETRY_AFTER_MAX = env.int("HUB_RETRY_AFTER_MAX", default=3_600)
# A wait up to this many seconds before a delivery's next try is a broker message
# with a countdown; a longer one (a later retry, Retry-After, a pause) waits in
# the database, and hub.enqueue_due (beat, every HUB_ENQUEUE_INTERVAL seconds)
# sends it when it comes due. So a dead subscriber owed 100,000 deliveries costs
# no worker memory and no message held by a worker.
HUB_BROKER_MAX_COUNTDOWN = env.int("HUB_BROKER_MAX_COUNTDOWN", default=30)
HUB_ENQUEUE_INTERVAL = env.float("HUB_ENQUEUE_INTERVAL", default=1.0)
if HUB_BROKER_MAX_COUNTDOWN < 0 or not HUB_ENQUEUE_INTERVAL > 0:
    raise ImproperlyConfigured(
        "HUB_BROKER_MAX_COUNTDOWN must be 0 or more seconds and HUB_ENQUEUE_INTERVAL a positive number of seconds"
    )

# At most this many deliveries per callback URL per window ("100/10s"; "off"),
# shared by every worker through Redis (or the database without Redis).
# A subscription's own `rate_limit` overrides it.
HUB_CALLBACK_RATE_LIMIT = env.str("HUB_CALLBACK_RATE_LIMIT", default="100/10s")

# Circuit breaker: this many consecutive failed attempts pause a subscription
# (0 never pauses); after the cool-down (seconds) one delivery probes it, and the
# first success resumes it and sends what waited.
HUB_CALLBACK_FAILURE_PAUSE = env.int("HUB_CALLBACK_FAILURE_PAUSE", default=5)
HUB_CALLBACK_PAUSE_COOLDOWN = env.int("HUB_CALLBACK_PAUSE_COOLDOWN", default=60)

# At most this many requests in flight to one callback at once, across every
# worker (needs Redis; 0 = no cap): a subscriber that hangs until the timeout
# holds this many worker threads at most.
HUB_CALLBACK_MAX_IN_FLIGHT = env.int("HUB_CALLBACK_MAX_IN_FLIGHT", default=4)

# Celery's own rate_limit on the deliver task ("100/s", "10/m"), per worker
# process. Unset by default: under a backlog it collapses to about one task a
# second (docs/celery-facts.md, celery/celery#5927). HUB_CALLBACK_RATE_LIMIT
# is the limit that protects subscribers.
HUB_DELIVERY_RATE_LIMIT = env.str("HUB_DELIVERY_RATE_LIMIT", default="") or None

# How often beat removes expired subscriptions and re-sends work the broker may
# have lost (notifications never spread, requests never verified, deliveries past
# due), in seconds; how late such work must be before it is re-sent; and the
# queue length above which deliveries are not re-sent (the queue likely holds them).
# Each sweep first reads the hub's marker in a Redis broker (one GET): a broker
# that lost its data gets everything owed at once, so the interval is short.
HUB_EXPIRE_INTERVAL = env.int("HUB_EXPIRE_INTERVAL", default=60)
HUB_SWEEP_INTERVAL = env.int("HUB_SWEEP_INTERVAL", default=5)
HUB_SWEEP_GRACE_SECONDS = env.int("HUB_SWEEP_GRACE_SECONDS", default=120)
HUB_SWEEP_MAX_QUEUE = env.int("HUB_SWEEP_MAX_QUEUE", default=1_000)

# Retention (README, "Running it for a year"): beat's hub.purge removes, every
# HUB_RETENTION_INTERVAL seconds, notifications older than HUB_RETENTION_DAYS whose
# deliveries are all settled, with those deliveries and their attempts, and attempts
# older than HUB_ATTEMPT_RETENTION_DAYS (which may be shorter). 0 disables each.
HUB_RETENTION_DAYS = env.int("HUB_RETENTION_DAYS", default=30)
HUB_ATTEMPT_RETENTION_DAYS = env.int("HUB_ATTEMPT_RETENTION_DAYS", default=HUB_RETENTION_DAYS)
HUB_RETENTION_INTERVAL = env.int("HUB_RETENTION_INTERVAL", default=600)
if HUB_RETENTION_DAYS < 0 or HUB_ATTEMPT_RETENTION_DAYS < 0:
    raise ImproperlyConfigured("HUB_RETENTION_DAYS and HUB_ATTEMPT_RETENTION_DAYS must be whole days >= 0 (0: keep)")
if HUB_RETENTION_DAYS and HUB_ATTEMPT_RETENTION_DAYS > HUB_RETENTION_DAYS:
    raise ImproperlyConfigured(
        f"HUB_ATTEMPT_RETENTION_DAYS ({HUB_ATTEMPT_RETENTION_DAYS}) must not exceed HUB_RETENTION_DAYS "
        f"({HUB_RETENTION_DAYS}): attempts go with their deliveries after that anyway"
    )
if HUB_RETENTION_INTERVAL < 1:
    raise ImproperlyConfigured("HUB_RETENTION_INTERVAL must be a positive number of seconds")

# Admin login lockout (django-axes, https://django-axes.readthedocs.io/en/latest/4_configuration.html):
# after HUB_LOGIN_FAILURE_LIMIT failed logins for one username from one client
# address, that pair is refused (429) for HUB_LOGIN_COOLOFF_MINUTES, 0 meaning
# until `manage.py axes_reset`. By the pair, so that an attacker elsewhere cannot
# lock the real operator out. API tokens never log in, so they are not counted.
HUB_LOGIN_FAILURE_LIMIT = env.int("HUB_LOGIN_FAILURE_LIMIT", default=5)
HUB_LOGIN_COOLOFF_MINUTES = env.int("HUB_LOGIN_COOLOFF_MINUTES", default=15)
if HUB_LOGIN_FAILURE_LIMIT < 1 or HUB_LOGIN_COOLOFF_MINUTES < 0:
    raise ImproperlyConfigured("need HUB_LOGIN_FAILURE_LIMIT >= 1 and HUB_LOGIN_COOLOFF_MINUTES >= 0")
AXES_FAILURE_LIMIT = HUB_LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=HUB_LOGIN_COOLOFF_MINUTES) if HUB_LOGIN_COOLOFF_MINUTES else None
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# A successful login clears the pair's count, so typos spread over days never add up to a lockout.
AXES_RESET_ON_SUCCESS = True
# The client address as the throttles read it (HUB_NUM_PROXIES), not the proxy's.
AXES_CLIENT_IP_CALLABLE = "subscriptions.throttles.client_address"
# subscriptions/admin/logins.py registers axes' models itself, so that every admin action names its permissions.
AXES_ENABLE_ADMIN = False
# No "AXES: BEGIN" banner from every process at start (it would precede a command's own
# output); failed logins and lockouts are still logged.
AXES_VERBOSE = False

# --- Celery --------------------------------------------------------------------
# https://docs.celeryq.dev/en/stable/userguide/configuration.html

REDIS_URL = env.str("REDIS_URL", default="")
BROKER_DIR = VAR_DIR / "broker"

if env.str("CELERY_BROKER_URL", default=""):
    CELERY_BROKER_URL = env.str("CELERY_BROKER_URL")
elif REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
else:
    # Embedded broker: messages are files under var/broker, shared by every
    # process on this machine (websubhub/celery.py creates the folders).
    CELERY_BROKER_URL = "filesystem://localhost/"

if CELERY_BROKER_URL.startswith("filesystem"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "data"),
        "data_folder_out": str(BROKER_DIR / "data"),
        "control_folder": str(BROKER_DIR / "control"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "store_processed": False,
        # Seconds between looks at the queues when none had a message, and while the
        # worker waits for a task to finish before it takes the next one (prefetch):
        # the floor on each hop's latency, and with 0.1 the embedded hub ran at
        # about 40 deliveries/s. Cheap: the channel lists the folder at most every
        # 20 ms (websubhub/embedded_broker.py).
        "polling_interval": 0.01,
    }
else:
    # Redis hands an unacknowledged message to another worker after this many
    # seconds; it must exceed the longest countdown a worker holds (at most
    # HUB_BROKER_MAX_COUNTDOWN: longer waits are kept in the database) plus a
    # task's run, or a held message would be delivered twice.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": max(3_600, 2 * HUB_BROKER_MAX_COUNTDOWN + 600),
    }

CELERY_IMPORTS = ("tasks.verify", "tasks.spread", "tasks.deliver", "tasks.periodic")
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TIMEZONE = TIME_ZONE
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fixup closes every database connection around every task
# unless this is set: a new PostgreSQL connection per delivery cost more than
# the delivery (bench/RESULTS.md). Connections are kept instead, and checked
# before each task like a web request's (websubhub/celery.py); with the pool
# (CONN_MAX_AGE 0) that check hands the connection back after every task. Left
# set with the pool too: under prefork the fixup would close the whole pool.
CELERY_DB_REUSE_MAX = 10_000
# The pool `celery -A websubhub worker` starts with when no -P/-c is given:
# deliveries wait on the network, so threads (bench/RESULTS.md compares pools).
CELERY_WORKER_POOL = env.str("HUB_WORKER_POOL", default="threads")
CELERY_WORKER_CONCURRENCY = env.int("HUB_WORKER_CONCURRENCY", default=32)
# A threads-pool worker (the default) runs as this many processes, each with its
# threads and its database pool: one process uses one core at most. The command
# an operator starts is the first; it starts and watches the others
# (websubhub/siblings.py). Default: the machine's cores; 1 keeps one process.
HUB_WORKER_PROCESSES = env.int("HUB_WORKER_PROCESSES", default=os.cpu_count() or 1)
if HUB_WORKER_PROCESSES < 1:
    raise ImproperlyConfigured("HUB_WORKER_PROCESSES must be 1 or more")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Publishing must not hang a web request when the broker is down: fail fast, the
# periodic sweep re-sends what was not published.
CELERY_BROKER_CONNECTION_TIMEOUT = env.float("CELERY_BROKER_CONNECTION_TIMEOUT", default=4.0)
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5}
# Hard and soft limits well above the HTTP timeouts (seconds).
CELERY_TASK_SOFT_TIME_LIMIT = 120
CELERY_TASK_TIME_LIMIT = 180
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# One queue per kind of work, so a flood of deliveries never delays a
# verification. A worker started without -Q consumes all of them (websubhub/celery.py
# declares them as the app's task_queues).
HUB_QUEUES = ALL_QUEUES
CELERY_TASK_DEFAULT_QUEUE = QueueName.PERIODIC
CELERY_TASK_DEFAULT_EXCHANGE = "hub"
CELERY_TASK_ROUTES = {
    TaskName.VERIFY: {"queue": QueueName.VERIFY},
    TaskName.FETCH_TOPIC: {"queue": QueueName.SPREAD},
    TaskName.SPREAD: {"queue": QueueName.SPREAD},
    TaskName.DELIVER: {"queue": QueueName.DELIVER},
    TaskName.EXPIRE_SUBSCRIPTIONS: {"queue": QueueName.PERIODIC},
    TaskName.SWEEP: {"queue": QueueName.PERIODIC},
    TaskName.ENQUEUE_DUE: {"queue": QueueName.PERIODIC},
    TaskName.PURGE: {"queue": QueueName.PERIODIC},
}
CELERY_BEAT_SCHEDULE = {
    "expire-subscriptions": {"task": TaskName.EXPIRE_SUBSCRIPTIONS, "schedule": float(HUB_EXPIRE_INTERVAL)},
    "sweep-unspread-notifications": {"task": TaskName.SWEEP, "schedule": float(HUB_SWEEP_INTERVAL)},
    # Each run expires with its interval: beat's next run does the same work.
    "enqueue-due-deliveries": {
        "task": TaskName.ENQUEUE_DUE,
        "schedule": HUB_ENQUEUE_INTERVAL,
        "options": {"expires": max(HUB_ENQUEUE_INTERVAL, 1.0)},
    },
    "purge-past-retention": {"task": TaskName.PURGE, "schedule": float(HUB_RETENTION_INTERVAL)},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# One line per record: "plain" text, or "json", one object per line with time,
# level, logger, message and any extra fields (websubhub/logformat.py).
from websubhub.logformat import LOG_FORMATTERS, log_format  # noqa: E402

try:
    HUB_LOG_FORMAT = log_format(env.str("HUB_LOG_FORMAT", default="plain"))
except ValueError as error:
    raise ImproperlyConfigured(str(error)) from error
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": LOG_FORMATTERS,
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": HUB_LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env.str("HUB_LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # psycopg_pool logs every connection it lends and takes back at INFO.
        "psycopg.pool": {"level": "WARNING"},
        # At DEBUG, urllib3 would log every callback URL with its query string,
        # which may carry a subscriber's credentials.
        "urllib3": {"level": "WARNING"},
        # Django's own handlers (DEBUG's console, runserver's) would print a second,
        # plain line: everything goes through the root's one handler.
        "django": {"handlers": [], "propagate": True},
        "django.server": {"handlers": [], "propagate": True},
    },
}

# The admin's dashboard lists a subscription as needing attention when more than this
# percentage of its deliveries attempted in the last hour failed or are being retried
# (besides every paused one and every one with new dead letters).
HUB_ADMIN_ATTENTION_FAILURE_RATE = env.float("HUB_ADMIN_ATTENTION_FAILURE_RATE", default=10.0)
if not 0 <= HUB_ADMIN_ATTENTION_FAILURE_RATE < 100:
    raise ImproperlyConfigured("HUB_ADMIN_ATTENTION_FAILURE_RATE must be a percentage from 0 up to (not including) 100")
