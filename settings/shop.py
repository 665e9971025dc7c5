"""The shop's own settings: payment gateway, e-mail, SMS, retry policy and periodic jobs."""

from django.core.exceptions import ImproperlyConfigured

from .env import env_bool, env_float, env_int, env_list, env_str, var_dir, var_path

SHOP_NAME = env_str("SHOP_NAME", "Celery Shop")
SHOP_BASE_URL = env_str("SHOP_BASE_URL", "http://127.0.0.1:8000")
SHOP_STAFF_EMAILS = env_list("SHOP_STAFF_EMAILS", "staff@example.com")

# Payment gateway. "demo" is the built-in fake provider: card 4000 0000 0000 0002
# declines, any other Luhn-valid number is charged after PAYMENT_DEMO_LATENCY seconds.
PAYMENT_GATEWAY = env_str("PAYMENT_GATEWAY", "demo")
PAYMENT_DEMO_LATENCY = env_float("PAYMENT_DEMO_LATENCY", 0.3)

# E-mail through Django's framework. The default writes each message to var/mail/;
# set EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend and EMAIL_HOST etc.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.filebased.EmailBackend")
# The default folder is made here, private (settings.env.private_dir), not by the backend.
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH") or str(var_dir("mail"))
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Celery Shop <shop@example.com>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# SMS: "file" appends each message to SMS_FILE_PATH (development); "http" POSTs JSON
# to SMS_HTTP_URL with SMS_API_KEY, like a real SMS gateway.
SMS_PROVIDER = env_str("SMS_PROVIDER", "file")
SMS_FILE_PATH = env_str("SMS_FILE_PATH", str(var_path("sms.log")))
SMS_HTTP_URL = env_str("SMS_HTTP_URL")
SMS_API_KEY = env_str("SMS_API_KEY")
SMS_TIMEOUT = env_float("SMS_TIMEOUT", 5.0)
SMS_SENDER = env_str("SMS_SENDER", "CeleryShop")

# Retries of transient provider errors: exponential backoff from TASK_RETRY_BACKOFF
# seconds, capped at TASK_RETRY_BACKOFF_MAX, with equal jitter (half fixed, half random), TASK_MAX_RETRIES times.
TASK_RETRY_BACKOFF = env_float("TASK_RETRY_BACKOFF", 2.0)
TASK_RETRY_BACKOFF_MAX = env_float("TASK_RETRY_BACKOFF_MAX", 300.0)
TASK_MAX_RETRIES = env_int("TASK_MAX_RETRIES", 5)
# The wait before a task whose pool process died is run again (counts as one retry).
TASK_WORKER_LOST_RETRY_DELAY = env_float("TASK_WORKER_LOST_RETRY_DELAY", 10.0)

# Periodic jobs (default schedules: each app's schedules.py). Unpaid orders older than
# STALE_ORDER_MINUTES are cancelled and their stock released; active orders whose
# workflow has not moved for STUCK_WORKFLOW_MINUTES are sent again; staff get one
# e-mail a day per set of active products with LOW_STOCK_THRESHOLD units or fewer.
STALE_ORDER_MINUTES = env_int("STALE_ORDER_MINUTES", 60)
STUCK_WORKFLOW_MINUTES = env_float("STUCK_WORKFLOW_MINUTES", 10)
LOW_STOCK_THRESHOLD = env_int("LOW_STOCK_THRESHOLD", 5)

# Business alerts (tasks_admin/alerts.py; thresholds are edited in the admin). Each alert's
# opening and resolution is e-mailed to ALERT_EMAILS and POSTed as JSON to ALERT_WEBHOOK_URL
# (if set), signed with ALERT_WEBHOOK_SECRET (HMAC-SHA256, X-Alert-Signature header).
ALERT_EMAILS = env_list("ALERT_EMAILS", ",".join(SHOP_STAFF_EMAILS))
ALERT_WEBHOOK_URL = env_str("ALERT_WEBHOOK_URL")
ALERT_WEBHOOK_SECRET = env_str("ALERT_WEBHOOK_SECRET")
if ALERT_WEBHOOK_URL and not ALERT_WEBHOOK_SECRET:
    raise ImproperlyConfigured("ALERT_WEBHOOK_URL needs ALERT_WEBHOOK_SECRET: its receiver checks the signature")
ALERT_WEBHOOK_TIMEOUT = env_float("ALERT_WEBHOOK_TIMEOUT", 5.0)
ALERT_SUBJECT_PREFIX = env_str("ALERT_SUBJECT_PREFIX", "Shop alert")
# The links in alerts point into the admin at this address.
ALERT_LINK_BASE_URL = env_str("ALERT_LINK_BASE_URL", SHOP_BASE_URL)
