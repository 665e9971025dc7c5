"""Django settings: every deployment-specific value comes from the environment."""

import os
from pathlib import Path

import dj_database_url
import django
from django.core.exceptions import ImproperlyConfigured

from .env import env_bool, env_float, env_int, env_list, env_str, secret_key, var_dir, var_path

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.forms",  # the admin's widget templates include Django's form templates (TEMPLATES)
    "django_celery_results",
    "django_celery_beat",
    "shop",
    "orders",
    "notifications",
    "tasks_admin",
]

MIDDLEWARE = [
    "tasks_admin.health.ProbesMiddleware",  # /healthz, /readyz: before host checks and redirects
    # Outermost but for the probes: times every request and counts its final status (/metrics).
    "tasks_admin.http_metrics.RequestMetricsMiddleware",
    "tasks_admin.logcontext.RequestContextMiddleware",  # a request id for the request's log lines and tasks
    "shop.jsonapi.JsonErrorsMiddleware",  # it sees every answer to the API
    "django.middleware.security.SecurityMiddleware",
    "shop.middleware.RejectNulBytesMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "shop.urls"
WSGI_APPLICATION = "shop.wsgi.application"

# Form widgets (the storefront's and the admin's forms) render from Django's own Jinja2 form
# templates, compiled to Python, in half the time of its Django-language ones (41 against 84 µs
# a checkbox); every other template, the admin's widget templates included, is the Django
# language's. The Jinja2 engine comes first, where the form renderer looks for
# widget templates, and holds nothing else.
FORM_RENDERER = "django.forms.renderers.TemplatesSetting"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.jinja2.Jinja2",
        "NAME": "form_widgets",
        "DIRS": [Path(django.__file__).parent / "forms" / "jinja2"],
        "APP_DIRS": False,
    },
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "shop.context_processors.storefront",
            ],
        },
    },
]

# DATABASE_URL, e.g. postgres://user@127.0.0.1:5432/shop. The default is a SQLite
# file under var/ so the shop runs on a laptop with no database server.
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{var_path('db.sqlite3')}",
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
# web, worker and beat write to the same SQLite file: WAL lets readers run beside the
# writer, IMMEDIATE takes the write lock up front (no lock-upgrade deadlocks), and the
# timeout makes writers queue instead of failing with "database is locked".
SQLITE_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 30,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = SQLITE_OPTIONS
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # Tests start real worker processes, so the test database must be a file they can
    # open; one per test run, so that two runs side by side do not share it.
    DATABASES["default"]["TEST"] = {"NAME": str(var_path(f"test-db-{os.getpid()}.sqlite3"))}

# A host that falls off the network in the middle of a transaction leaves its PostgreSQL session
# "idle in transaction", holding its row locks until TCP gives up on it (hours): every task that
# touches those orders, and a worker's main process recording one, waits behind it. PostgreSQL
# ends such a session after this many seconds (tests/reliability/test_failover.py, scenario 19);
# keep it above the longest a transaction of the shop waits on anything but the database.
DB_IDLE_IN_TRANSACTION_TIMEOUT = env_float("DB_IDLE_IN_TRANSACTION_TIMEOUT", 60)


def _session_timeout(parameter: str, seconds: float) -> None:
    """Set a PostgreSQL timeout for every session the shop opens (off where `seconds` is 0)."""
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and seconds > 0:
        options = DATABASES["default"].setdefault("OPTIONS", {})
        options["options"] = f"{options.get('options', '')} -c {parameter}={int(seconds * 1000)}".strip()


_session_timeout("idle_in_transaction_session_timeout", DB_IDLE_IN_TRANSACTION_TIMEOUT)

# Until then, a statement waiting for those locks waits in libpq, where no signal reaches it: not
# the soft time limit, which Python raises only once the statement returns. It would wait past the
# hard time limit and be killed, and a killed step fails for good: its order held for staff. A
# statement that waits this many seconds for a lock fails instead, and its task retries (scenario
# 20; tests/integration/test_lock_timeout.py). Keep it under CELERY_TASK_SOFT_TIME_LIMIT; 0: off.
DB_LOCK_TIMEOUT = env_float("DB_LOCK_TIMEOUT", 10)
_session_timeout("lock_timeout", DB_LOCK_TIMEOUT)

# The other side of the same partition: a process whose host cannot reach PostgreSQL would wait
# for its packets for as long as TCP retries (a connection attempt about two minutes, a query on an
# open connection about fifteen). libpq gives up on a connection attempt after DB_CONNECT_TIMEOUT
# and on an open connection whose data goes unacknowledged (or whose keepalives go unanswered while
# it waits for a result) after DB_NETWORK_TIMEOUT seconds: the task fails with OperationalError and
# is retried, on whichever host takes it (tests/reliability/test_failover.py, scenario 20). Neither
# bounds a slow query: a server that acknowledges its packets is never given up on.
DB_CONNECT_TIMEOUT = env_int("DB_CONNECT_TIMEOUT", 5)
DB_NETWORK_TIMEOUT = env_int("DB_NETWORK_TIMEOUT", 20)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        connect_timeout=DB_CONNECT_TIMEOUT,
        tcp_user_timeout=DB_NETWORK_TIMEOUT * 1000,
        keepalives=1,
        keepalives_idle=max(1, DB_NETWORK_TIMEOUT // 2),
        keepalives_interval=max(1, DB_NETWORK_TIMEOUT // 8),
        keepalives_count=4,
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = var_dir("static")  # collectstatic's target, if you run it
# Serve app static files straight from their folders: no collectstatic step is
# needed on a laptop, in tests or in production.
WHITENOISE_USE_FINDERS = True

SESSION_ENGINE = "django.contrib.sessions.backends.db"
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

# HTTPS=1 in production behind TLS: secure cookies, HSTS and redirects.
HTTPS = env_bool("HTTPS", False)
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
if env_bool("BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# The JSON API caps request bodies well below Django's default.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 256 * 1024)

# /metrics (Prometheus text format) answers 404 unless METRICS_TOKEN is set; then it takes
# "Authorization: Bearer <token>", or basic auth with the token as the password, and 401 otherwise.
METRICS_TOKEN = env_str("METRICS_TOKEN")

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
# "json" in production: one JSON object a line, with the request id, task id and name, order number
# and trace id where known (tasks_admin/logcontext.py); "plain" (the default, `make run`) for people.
LOG_FORMAT = env_str("LOG_FORMAT", "plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, got {LOG_FORMAT!r}")
# Every record is written once, by root's console handler. Django's default handlers on "django"
# wrote each of its records a second time with DEBUG on (its console; mail_admins sends nothing
# without ADMINS), so "django" keeps none. A 403 is one WARNING line naming the user, without a
# traceback (shop.log.RefusalWithoutTraceback; tests/functional/test_forbidden_logging.py).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"refusal_without_traceback": {"()": "shop.log.RefusalWithoutTraceback"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "tasks_admin.logcontext.json_formatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": []},
        "django.request": {"filters": ["refusal_without_traceback"]},
        "django.db.backends": {"level": "INFO"},
    },
}
