"""Settings for the websubhub project.

Everything that differs between machines comes from the environment (see
README.md, "Configuration", and .env.example). With nothing set, the hub runs on
SQLite and Celery's filesystem transport under ./var, so it needs no service.

Why one module of about 400 lines: it is the one settings module (no base/local/
production split: production differs by environment variables only), and most of
its length is the comments each non-obvious setting carries. The hub's own HUB_*
settings are declared and checked in hub_settings.py; the blocks here (Django,
security, database, DRF and OpenAPI, cache, axes, Celery, logging) each derive
from them in the order Django reads them.
"""

import secrets
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from websubhub.hub_settings import read_environment
from websubhub.logformat import LOG_FORMATTERS
from websubhub.queues import QueueName, TaskName

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

# The hub's own settings: every HUB_* variable is declared, parsed and checked in
# websubhub/hub_settings.py (a wrong value stops the process here, naming it) and
# becomes a setting of the same name. Code reads them through
# `websubhub.hub_settings.hub_settings`; the Django and library settings below that
# derive from them read this dict.
_HUB = read_environment(lambda name: env.str(name, default=None))
globals().update(_HUB)

# Where the embedded defaults keep their state (SQLite file, filesystem broker,
# beat schedule, generated secret key). Ignored by git. Created at start-up
# (SubscriptionsConfig.ready()), not here: importing settings changes nothing.
VAR_DIR = _HUB["HUB_VAR_DIR"]


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
_HTTPS = _HUB["HUB_URL"].lower().startswith("https://")
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

# Django's cookie-then-session messages, their storages built only for a request that adds or reads one.
MESSAGE_STORAGE = "websubhub.message_storage.LazyFallbackStorage"

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
    # DRF's negotiation, with the usual request (one renderer, Accept */* or absent) answered at once.
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "subscriptions.api.negotiation.HubContentNegotiation",
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
    "NUM_PROXIES": _HUB["HUB_NUM_PROXIES"],
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
# HUB_* settings: websubhub/hub_settings.py (above). Django's own limit on a form
# body is the hub's limit on any body.
DATA_UPLOAD_MAX_MEMORY_SIZE = _HUB["HUB_MAX_REQUEST_BYTES"]

# Admin login lockout (django-axes, https://django-axes.readthedocs.io/en/latest/4_configuration.html):
# after HUB_LOGIN_FAILURE_LIMIT failed logins for one username from one client
# address, that pair is refused (429) for HUB_LOGIN_COOLOFF_MINUTES, 0 meaning
# until `manage.py axes_reset`. By the pair, so that an attacker elsewhere cannot
# lock the real operator out. API tokens never log in, so they are not counted.
AXES_FAILURE_LIMIT = _HUB["HUB_LOGIN_FAILURE_LIMIT"]
_COOLOFF = _HUB["HUB_LOGIN_COOLOFF_MINUTES"]
AXES_COOLOFF_TIME = timedelta(minutes=_COOLOFF) if _COOLOFF else None
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
        "visibility_timeout": max(3_600, 2 * _HUB["HUB_BROKER_MAX_COUNTDOWN"] + 600),
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
CELERY_WORKER_POOL = _HUB["HUB_WORKER_POOL"]
CELERY_WORKER_CONCURRENCY = _HUB["HUB_WORKER_CONCURRENCY"]
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
# declares websubhub/queues.py's ALL_QUEUES as the app's task_queues).
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
    "expire-subscriptions": {"task": TaskName.EXPIRE_SUBSCRIPTIONS, "schedule": float(_HUB["HUB_EXPIRE_INTERVAL"])},
    "sweep-unspread-notifications": {"task": TaskName.SWEEP, "schedule": float(_HUB["HUB_SWEEP_INTERVAL"])},
    # Each run expires with its interval: beat's next run does the same work.
    "enqueue-due-deliveries": {
        "task": TaskName.ENQUEUE_DUE,
        "schedule": _HUB["HUB_ENQUEUE_INTERVAL"],
        "options": {"expires": max(_HUB["HUB_ENQUEUE_INTERVAL"], 1.0)},
    },
    "purge-past-retention": {"task": TaskName.PURGE, "schedule": float(_HUB["HUB_RETENTION_INTERVAL"])},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# One line per record: "plain" text, or "json", one object per line with time,
# level, logger, message and any extra fields (websubhub/logformat.py).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": LOG_FORMATTERS,
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": _HUB["HUB_LOG_FORMAT"]}},
    "root": {"handlers": ["console"], "level": _HUB["HUB_LOG_LEVEL"]},
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
