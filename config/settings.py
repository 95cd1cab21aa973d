"""Assay settings. Every value comes from the environment (see README, Configuration)."""

from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.broker import filesystem_transport_options
from config.env import env_bool, env_choice, env_int, env_list, env_paths, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("ASSAY_VAR_DIR", str(BASE_DIR / "var"))).resolve()

DEBUG = env_bool("ASSAY_DEBUG", False)
SECRET_KEY = env_str("ASSAY_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "ASSAY_SECRET_KEY must be set when ASSAY_DEBUG is off: `make demo` keeps one in "
            "var/secret_key (export ASSAY_SECRET_KEY=$(cat var/secret_key)); for a deployment "
            "generate one: python -c 'import secrets; print(secrets.token_urlsafe(50))'"
        )
    SECRET_KEY = "insecure-debug-only-key"  # noqa: S105 - only reachable with ASSAY_DEBUG=1
ALLOWED_HOSTS = env_list("ASSAY_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("ASSAY_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "axes",
    "csp",
    "django_htmx",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "audits",
    "audits.dossier",
    "audits.operations",
    "interp_jobs",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (the admin's, Swagger UI's, the UI's) from any process, runserver or
    # gunicorn alike, with far-future caching of hashed names.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "audits.middleware.RequestBodyLimitMiddleware",
    "audits.middleware.MalformedRequestMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "audits.middleware.ActorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it answers a locked-out login before any view runs.
    "axes.middleware.AxesMiddleware",
]

# django-axes first: it refuses a locked-out username/address before a password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Lock a username (from any address), and an address (for any username), after this many
# failed logins in a row, for an hour; an admin clears a username with
# `manage.py axes_reset_username USER`.
AXES_FAILURE_LIMIT = env_int("ASSAY_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = env_int("ASSAY_LOGIN_LOCKOUT_HOURS", 1, minimum=1)
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
# People get a page, API and JSON clients the same JSON as before.
AXES_LOCKOUT_CALLABLE = "audits.web.errors.locked_out"
CSRF_FAILURE_VIEW = "audits.web.errors.csrf_failure"

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# SQLite under var/ is the embedded default; DATABASE_URL selects PostgreSQL in production.
_database_url = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'assay.sqlite3'}")
try:
    DATABASES = {"default": dj_database_url.parse(_database_url, conn_max_age=0)}
except (ValueError, KeyError) as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a database URL: {exc}") from None
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Workers are separate processes; wait for the writer instead of failing "database is locked".
    DATABASES["default"]["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-assay.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on every request otherwise
STATICFILES_DIRS = [BASE_DIR / "static"]
# Without a collectstatic run (runserver, tests), whitenoise serves the apps' files directly.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# Request bodies above this size are refused with 413 before any view reads them.
ASSAY_MAX_REQUEST_BYTES = env_int("ASSAY_MAX_REQUEST_BYTES", 1_000_000, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = ASSAY_MAX_REQUEST_BYTES

# Evidence files are content-addressed under this directory (a Django storage root).
ASSAY_EVIDENCE_ROOT = Path(env_str("ASSAY_EVIDENCE_ROOT", str(VAR_DIR / "evidence"))).resolve()
# Model versions may only be registered from inside these directories (os.pathsep-separated),
# so the API cannot be used to read arbitrary files on the server.
ASSAY_MODEL_STORE = Path(env_str("ASSAY_MODEL_STORE", str(VAR_DIR / "models"))).resolve()
ASSAY_MODEL_ROOTS = env_paths("ASSAY_MODEL_ROOTS", [ASSAY_MODEL_STORE])
# Lenses trained by a job are written here (inside the model store).
ASSAY_LENS_STORE = Path(env_str("ASSAY_LENS_STORE", str(ASSAY_MODEL_STORE / "lenses"))).resolve()
# Lenses may be registered from the model roots and from the lenses shipped with Assay.
ASSAY_SHIPPED_LENSES = BASE_DIR / "interp_jobs" / "lenses"
ASSAY_LENS_ROOTS = env_paths("ASSAY_LENS_ROOTS", [*ASSAY_MODEL_ROOTS, ASSAY_SHIPPED_LENSES])
# The server's Ed25519 key that signs ledger checkpoints; created on first use if absent.
ASSAY_LEDGER_KEY_FILE = Path(
    env_str("ASSAY_LEDGER_KEY_FILE", str(VAR_DIR / "keys" / "ledger-ed25519.pem"))
).resolve()
# Public keys the checkpoint key replaced (manage.py rotate_ledger_key), each with the rotation
# statement both keys signed; it goes wherever the key file goes (backups included).
ASSAY_LEDGER_RETIRED_KEYS_FILE = Path(
    env_str(
        "ASSAY_LEDGER_RETIRED_KEYS_FILE",
        str(ASSAY_LEDGER_KEY_FILE.parent / "ledger-retired-keys.json"),
    )
).resolve()
ASSAY_LEDGER_ORIGIN = env_str("ASSAY_LEDGER_ORIGIN", "assay")
# Exported dossiers (PDF and bundle) are kept here, one folder per export.
ASSAY_DOSSIER_ROOT = Path(env_str("ASSAY_DOSSIER_ROOT", str(VAR_DIR / "dossiers"))).resolve()
# Every signed checkpoint is also appended here, outside the database (JSON lines).
ASSAY_CHECKPOINT_LOG = Path(
    env_str("ASSAY_CHECKPOINT_LOG", str(VAR_DIR / "checkpoints" / "checkpoints.jsonl"))
).resolve()
ASSAY_DEVICE = env_choice("ASSAY_DEVICE", "cpu", ("cpu", "cuda"))
ASSAY_DTYPE = env_choice("ASSAY_DTYPE", "float32", ("float32", "bfloat16", "float16"))

# API tokens (django-rest-knox): only a digest is stored, each token expires, and the token
# itself is shown once, when it is created.
ASSAY_TOKEN_TTL_HOURS = env_int("ASSAY_TOKEN_TTL_HOURS", 720, minimum=1)
REST_KNOX = {
    "TOKEN_TTL": timedelta(hours=ASSAY_TOKEN_TTL_HOURS),
    "AUTH_HEADER_PREFIX": "Token",
    "AUTO_REFRESH": False,
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "audits.api.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PARSER_CLASSES": ["audits.api.parsers.StrictJSONParser"],
    "DEFAULT_THROTTLE_RATES": {"login": env_str("ASSAY_LOGIN_RATE", "10/min")},
    "DEFAULT_PERMISSION_CLASSES": ["audits.api.permissions.HasAnyRole"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "PAGE_SIZE": 50,
    "DEFAULT_PAGINATION_CLASS": "audits.api.pagination.BoundedPagination",
    "EXCEPTION_HANDLER": "audits.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Assay API",
    "DESCRIPTION": "Interpretability evidence and signed release sign-off.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and the docs page are for signed-in people only.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # Swagger UI's assets ship with the package: the docs page works with no network.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "CheckRunStatusEnum": "audits.models.CheckRun.Status",
        "PolicyStatusEnum": "audits.models.CheckPolicy.Status",
        "DigestStatusEnum": "audits.models.ModelVersion.DigestStatus",
    },
}

# Celery. Unset CELERY_BROKER_URL means the embedded default: kombu's filesystem transport
# under var/broker, which needs no server but still runs checks in a separate worker process.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
ASSAY_BROKER_DIR = Path(env_str("ASSAY_BROKER_DIR", str(VAR_DIR / "broker"))).resolve()
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = filesystem_transport_options(ASSAY_BROKER_DIR)
# The database is the source of truth for check runs, so Celery keeps no results. A task is
# acknowledged only after it finished, so a worker killed mid-check gets it delivered again.
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "cpu"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
ASSAY_CHECK_SOFT_TIME_LIMIT = env_int("ASSAY_CHECK_SOFT_TIME_LIMIT", 1800, minimum=1)
ASSAY_CHECK_HARD_TIME_LIMIT = env_int("ASSAY_CHECK_HARD_TIME_LIMIT", 1900, minimum=1)
ASSAY_CHECK_MAX_RETRIES = env_int("ASSAY_CHECK_MAX_RETRIES", 3, minimum=0)
# Memory a worker process may keep for loaded models and lenses (least recently used go first).
ASSAY_WORKER_CACHE_MB = env_int("ASSAY_WORKER_CACHE_MB", 4096, minimum=0)
# With a GPU worker, the model-heavy check kinds go to the "gpu" queue; the rest stay on "cpu".
ASSAY_GPU_QUEUE = env_bool("ASSAY_GPU_QUEUE", False)
# Runs queued or running past these many seconds are re-enqueued or failed by the reconciler.
ASSAY_RECONCILE_INTERVAL = env_int("ASSAY_RECONCILE_INTERVAL", 300, minimum=1)
ASSAY_QUEUED_DEADLINE = env_int("ASSAY_QUEUED_DEADLINE", 900, minimum=1)
CELERY_BEAT_SCHEDULE = {
    "reconcile-check-runs": {
        "task": "interp_jobs.reconcile_check_runs",
        "schedule": float(ASSAY_RECONCILE_INTERVAL),
    },
    "sign-ledger-checkpoint": {
        "task": "interp_jobs.sign_ledger_checkpoint",
        "schedule": float(ASSAY_RECONCILE_INTERVAL),
    },
}
if ASSAY_CHECK_HARD_TIME_LIMIT <= ASSAY_CHECK_SOFT_TIME_LIMIT:
    raise ImproperlyConfigured(
        "ASSAY_CHECK_HARD_TIME_LIMIT must be greater than ASSAY_CHECK_SOFT_TIME_LIMIT"
    )

# Behind HTTPS (any deployment but a laptop): HSTS, secure cookies, redirect to https. The demo
# and local runs serve plain http on 127.0.0.1 and set ASSAY_HTTPS=false.
ASSAY_HTTPS = env_bool("ASSAY_HTTPS", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = ASSAY_HTTPS
SECURE_SSL_REDIRECT = ASSAY_HTTPS and env_bool("ASSAY_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env_int("ASSAY_HSTS_SECONDS", 31_536_000, minimum=0) if ASSAY_HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = ASSAY_HTTPS
SECURE_HSTS_PRELOAD = ASSAY_HTTPS
if env_bool("ASSAY_BEHIND_PROXY", False):
    # The proxy terminates TLS and says so in this header (it must strip it from clients).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Content security policy (django-csp): same-origin scripts, styles and images only, no inline
# script, nothing framed.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        # Swagger UI and the admin set inline styles; style injection cannot run script.
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

LOG_LEVEL = env_choice("ASSAY_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
}

# --- operations (docker, metrics, logging, webhooks) ---
# Owned with audits/operations and docker/ (docs/operations.md says what each variable does).
import re as _re  # noqa: E402

from cryptography.fernet import Fernet as _Fernet  # noqa: E402

# Prometheus: django-prometheus counts requests and latencies by view (outermost and innermost
# middleware; AxesMiddleware stays last, as django-axes asks). The request id comes first so
# that every log line of a request, redirects included, carries it.
INSTALLED_APPS += ["django_prometheus"]
MIDDLEWARE = [
    "audits.operations.logs.RequestIdMiddleware",
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    *MIDDLEWARE,
]
MIDDLEWARE.insert(
    MIDDLEWARE.index("axes.middleware.AxesMiddleware"),
    "django_prometheus.middleware.PrometheusAfterMiddleware",
)
# /metrics answers only to `Authorization: Bearer <token>`; unset, it answers 404.
ASSAY_METRICS_TOKEN = env_str("ASSAY_METRICS_TOKEN", "")
# Probes speak plain http inside the deployment's network: no https redirect for them.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# How long /readyz waits for workers to answer (Celery remote control), and reuses the answer.
ASSAY_READYZ_WORKER_TIMEOUT = env_int("ASSAY_READYZ_WORKER_TIMEOUT_MS", 2000, minimum=100) / 1000
ASSAY_READYZ_CACHE_SECONDS = env_int("ASSAY_READYZ_CACHE_SECONDS", 5, minimum=0)
# Persistent database connections (seconds; 0 closes each request's connection). The web role
# sets 60: a gate answer then skips a PostgreSQL connection set-up (bench/gate_load.py).
ASSAY_DB_CONN_MAX_AGE = env_int("ASSAY_DB_CONN_MAX_AGE", 0, minimum=0)
DATABASES["default"]["CONN_MAX_AGE"] = ASSAY_DB_CONN_MAX_AGE
DATABASES["default"]["CONN_HEALTH_CHECKS"] = ASSAY_DB_CONN_MAX_AGE > 0
# Collected static files (the images collect them at build time, outside the data volume).
STATIC_ROOT = Path(env_str("ASSAY_STATIC_ROOT", str(STATIC_ROOT))).resolve()
STATIC_ROOT.mkdir(parents=True, exist_ok=True)

# Logs: one JSON object per line with the request id (ASSAY_LOG_FORMAT=json, as the images set).
ASSAY_LOG_FORMAT = env_choice("ASSAY_LOG_FORMAT", "text", ("text", "json"))
ASSAY_ACCESS_LOG = env_bool("ASSAY_ACCESS_LOG", ASSAY_LOG_FORMAT == "json")
if ASSAY_LOG_FORMAT == "json":
    LOGGING["formatters"] = {"json": {"()": "audits.operations.logs.JsonFormatter"}}
    LOGGING["handlers"]["console"]["formatter"] = "json"  # type: ignore[index]

# The operations queue: webhook deliveries, the reconciler and checkpoint signing. "cpu" by
# default (one worker does everything); a deployment gives it its own small worker so that
# none of them waits behind a model check.
ASSAY_OPS_QUEUE = env_str("ASSAY_OPS_QUEUE", "cpu")
if not _re.fullmatch(r"[a-z0-9_-]{1,50}", ASSAY_OPS_QUEUE):
    raise ImproperlyConfigured(f"ASSAY_OPS_QUEUE={ASSAY_OPS_QUEUE!r} is not a queue name")
for _entry in CELERY_BEAT_SCHEDULE.values():
    _entry.setdefault("options", {}).setdefault("queue", ASSAY_OPS_QUEUE)  # type: ignore[attr-defined]
CELERY_BEAT_SCHEDULE["sweep-webhook-deliveries"] = {
    "task": "operations.sweep_webhook_deliveries",
    "schedule": 60.0,
    "options": {"queue": ASSAY_OPS_QUEUE},
}
CELERY_BEAT_SCHEDULE["purge-expired-tokens"] = {
    "task": "operations.purge_expired_tokens",
    "schedule": 3600.0,
    "options": {"queue": ASSAY_OPS_QUEUE},
}

# Webhooks: deliveries are signed with each webhook's secret, kept encrypted under these keys
# (Fernet keys, comma-separated, the first encrypts; unset: derived from ASSAY_SECRET_KEY).
ASSAY_WEBHOOK_KEYS = env_list("ASSAY_WEBHOOK_KEYS", [])
for _key in ASSAY_WEBHOOK_KEYS:
    try:
        _Fernet(_key)
    except (ValueError, TypeError):
        raise ImproperlyConfigured(
            "ASSAY_WEBHOOK_KEYS holds a value that is not a Fernet key; make one with: python -c "
            "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
        ) from None
ASSAY_WEBHOOK_TIMEOUT = env_int("ASSAY_WEBHOOK_TIMEOUT", 10, minimum=1)
ASSAY_WEBHOOK_MAX_ATTEMPTS = env_int("ASSAY_WEBHOOK_MAX_ATTEMPTS", 10, minimum=1)
# Receivers get https only, unless this is set (local receivers, tests).
ASSAY_WEBHOOK_ALLOW_HTTP = env_bool("ASSAY_WEBHOOK_ALLOW_HTTP", DEBUG)
# The address people and pipelines reach Assay at (e.g. https://assay.example.com): webhook
# bodies link to the gate with it; unset, they carry the path only.
ASSAY_PUBLIC_URL = env_str("ASSAY_PUBLIC_URL", "")
