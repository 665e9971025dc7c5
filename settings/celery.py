"""Celery configuration, read by shop/celery.py through the CELERY_ namespace."""

import math

from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

from .env import env_bool, env_float, env_int, env_list, env_str, var_path

# The embedded default is the Redis server that `make run` starts on a unix socket
# under var/ (nothing listens on the network). Production: redis://host:6379/0 or
# amqp://user:pass@host:5672//.
EMBEDDED_REDIS_SOCKET = var_path("redis.sock")
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", f"redis+socket://{EMBEDDED_REDIS_SOCKET}")
# A worker keeps reconnecting for as long as the broker is away (a Redis restart must
# not leave the shop without workers)...
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# AMQP heartbeats (seconds; RabbitMQ only): how soon RabbitMQ notices a worker host that fell off
# the network without closing its connection, and hands its unacknowledged messages to another
# (tests/reliability/test_failover.py). Celery's default is 120.
CELERY_BROKER_HEARTBEAT = env_int("CELERY_BROKER_HEARTBEAT", 120)
# Each worker's remote-control queue (ping, revoke broadcasts, inspect), RabbitMQ: not exclusive
# to its connection, as before Celery 5.7. A worker whose connection broke on its side (a network
# fault) reconnects before RabbitMQ lets the old session go, and an exclusive queue held by that
# session refused the new one's declaration (RESOURCE_LOCKED): the worker exited ("Unrecoverable
# error"; tests/integration/test_remote_control_reconnect.py, scenario 19). Not durable either: the
# queue is auto-deleted once unused and expires after 10 s (control_queue_expires). RabbitMQ 4.3+
# refuses transient non-exclusive queues by default: there, set it to 1 and restart workers on exit.
CELERY_CONTROL_QUEUE_EXCLUSIVE = env_bool("CELERY_CONTROL_QUEUE_EXCLUSIVE", False)
# How often a worker checks it can reach the database; while it cannot, it consumes nothing and
# the workers that can take its share (tasks_admin/database_guard.py). 0: never checks.
DB_GUARD_SECONDS = env_float("DB_GUARD_SECONDS", 5.0)
# How long one attempt waits for a broker node's TCP handshake (Celery's default: 4 s). A node that
# is down answers at once (refused); one behind a partition never answers, and a checkout would
# wait this long per attempt (tests/reliability/test_failover.py, scenario 21; Redis: scenario 24).
CELERY_BROKER_CONNECTION_TIMEOUT = env_float("CELERY_BROKER_CONNECTION_TIMEOUT", 1.0)
# ...while a checkout that cannot publish gives up within about a second: the order is
# kept (pending) and the stuck-workflow recovery sends its workflow once the broker is back.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}

# JSON only: a pickle message is code execution for anyone who can write to the broker.
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_ACCEPT_CONTENT = ["json"]

# django-celery-results' database backend (django-db), with chords that count each header
# task once and result writes retried through a database outage: tasks_admin/backend.py.
CELERY_RESULT_BACKEND = "tasks_admin.backend:ShopDatabaseBackend"
# A result row holds the result only: the task's name, arguments, worker and times are the task
# history's (tasks_admin.TaskRecord, docs/architecture.md "One writer per fact").
CELERY_RESULT_EXTENDED = False
# A task with ignore_result (the order workflow's steps) still has its failure stored: the
# console shows its traceback.
CELERY_TASK_STORE_ERRORS_EVEN_IF_IGNORED = True
# Database outages (tests/reliability/test_database_outage.py). A write of a result or a
# chord report waits for the database only until shortly before the task's soft time limit
# (RESULT_WRITE_RETRY_SECONDS in the worker's main process, web, beat), then is dropped and
# logged: waiting past the limit (30 retries with 10 s pauses did) got the task killed and
# recorded as failed, and its error callback stopped an order whose work was done.
CELERY_RESULT_BACKEND_ALWAYS_RETRY = True  # reads, through Celery's own loop
CELERY_RESULT_BACKEND_MAX_RETRIES = 10
CELERY_RESULT_BACKEND_MAX_SLEEP_BETWEEN_RETRIES_MS = 1000  # notice the database is back within a second
RESULT_WRITE_RETRY_SECONDS = env_float("RESULT_WRITE_RETRY_SECONDS", 5.0)
# No expiry through Celery: its built-in `celery.backend_cleanup` (which beat would
# schedule) deletes every expired result in one transaction. tasks_admin/cleanup.py
# deletes results and task history older than TASK_HISTORY_DAYS in batches instead.
CELERY_RESULT_EXPIRES = None
TASK_HISTORY_DAYS = env_int("TASK_HISTORY_DAYS", 7)
# Inside a worker, task history, step states and fired chords' removal are written in
# batches every this many seconds (or at this many rows) by a thread of each pool process:
# tasks_admin/writebehind.py. 0 writes each at once.
WRITE_BEHIND_SECONDS = env_float("WRITE_BEHIND_SECONDS", 0.5)
WRITE_BEHIND_MAX_ROWS = env_int("WRITE_BEHIND_MAX_ROWS", 500)

# At-least-once: a message is acknowledged only after its task returns, so a worker
# that dies mid-task leaves it to be delivered again. Every task is idempotent for this.
CELERY_TASK_ACKS_LATE = True
# If the broker connection drops, running tasks finish: their acknowledgement is lost and
# the message comes back, and the task runs again, doing nothing twice. Cancelling them
# instead (True) killed pool processes mid-step, between an SMTP server taking an e-mail
# and its record as sent: the redelivered step e-mailed the customer again (tests/reliability/test_redis_restart.py).
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
# One message at a time per process: tasks wait on providers, and a prefetched
# message would sit behind a slow one instead of going to an idle worker.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1

# A pool process killed under a task (the OOM killer, a segfault) would otherwise have its
# message acknowledged and the task silently lost; task_reject_on_worker_lost would requeue
# it forever instead. Retrying it bounds the redeliveries by the task's max_retries, after
# which it fails for good and is listed as a dead letter.
CELERY_TASK_RETRY_ON_WORKER_LOST = True

# Graceful deploys: on SIGTERM a worker stops taking tasks and lets running ones finish
# for up to this many seconds (keep it below the orchestrator's kill timeout); what is
# still running then is cancelled and, being acknowledged late, goes back to the queue.
# SIGTERM starts this soft shutdown only if a prefork worker runs with REMAP_SIGTERM=SIGQUIT
# in its environment (Procfile; billiard reads it before this file is loaded): a plain SIGTERM
# waits for running tasks however long they take (found by tests/reliability/test_graceful_deploy.py). An
# e-mail cut short may add up to EMAIL_TIMEOUT: Django's SMTP backend says QUIT on its way
# out. Not for the threads pool: it cannot cancel a task (Celery's cold shutdown fails on
# it), so it always waits, bounded by the providers' timeouts (SMS_TIMEOUT, EMAIL_TIMEOUT).
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = env_float("CELERY_SOFT_SHUTDOWN_TIMEOUT", 10.0)
CELERY_WORKER_ENABLE_SOFT_SHUTDOWN_ON_IDLE = True  # also hands back held ETA/retry messages

# Celery's Django fixup closes every database connection before and after each task unless
# DB_REUSE_MAX is set: a new PostgreSQL connection (and server process) per task, 11% of a
# worker's time in the benchmark's profile (`python -m benchmarks`). Never close them by
# count; Django's own policy (CONN_MAX_AGE, health checks, a connection that raised) applies
# after each task instead, as after a request (shop/celery.py).
CELERY_DB_REUSE_MAX = math.inf

CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 30)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 60)
# A pool process is replaced after this many tasks, or sooner past the memory bound below (the
# guard against a leak). At 1,000 the benchmark's drain replaced one every 4 s: forking it was
# 2.8 % of the worker's time, and each new process reconnects and warms its caches again.
CELERY_WORKER_MAX_TASKS_PER_CHILD = 10_000
CELERY_WORKER_MAX_MEMORY_PER_CHILD = 300_000  # KiB

# Redis redelivers a message nobody acknowledged within the visibility timeout: that is
# how the task of a worker killed mid-task comes back. It must exceed the longest task
# (time limit) plus the longest retry countdown (TASK_RETRY_BACKOFF_MAX), or a waiting
# retry is delivered a second time. Workers look for such messages every
# restore_interval × restore_throttle seconds (kombu's default: about 100 s).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 1800),
    "unacked_restore_interval": env_int("CELERY_RESTORE_INTERVAL", 10),
    "unacked_restore_throttle": env_int("CELERY_RESTORE_THROTTLE", 10),
    "socket_connect_timeout": CELERY_BROKER_CONNECTION_TIMEOUT,  # Redis's own name for the same bound
}

# Queues per workload. A plain `celery -A shop worker` consumes all of them; in
# production run one worker per queue (see README: threads for notifications,
# prefork for orders).
CELERY_TASK_DEFAULT_QUEUE = "celery"
QUEUE_NAMES = ("celery", "orders", "notifications")
# Each queue needs its own routing key: queues declared by name alone all bind the
# default exchange with key "celery", and every message would reach all of them.
#
# CELERY_BROKER_QUEUE_TYPE (RabbitMQ only): "classic" (the default) or "quorum".
#
# classic: durable queues on one node (kombu's default; tests/reliability/test_rabbitmq.py and the
# workflow tests run on them). A retry's countdown is held by the worker as an unacknowledged
# message, so RabbitMQ's consumer_timeout (default 30 min) must exceed the longest task plus the
# longest countdown (CELERY_TASK_TIME_LIMIT + TASK_RETRY_BACKOFF_MAX: 6 min), or the broker closes
# the channel and delivers those messages again. A cluster does not replicate them. (The
# Redis-only transport options above are ignored on amqp.)
#
# quorum: queues replicated over a RabbitMQ cluster (Raft), which survive losing a minority of
# its nodes (tests/reliability/test_quorum_queues.py, test_rabbitmq.py, test_failover.py).
# What they need, all set below:
# - a topic exchange ("shop.tasks"): Celery's native delayed delivery forwards a countdown
#   through its celery_delayed_* exchanges to the queue's own exchange and cannot with a direct
#   one. It is not named "celery", the direct exchange classic queues use: redeclaring an
#   exchange or queue with another type fails (PRECONDITION_FAILED), so move a broker from
#   classic to quorum on a new vhost (or once the old queues are drained and deleted);
# - native delayed delivery (declared by each worker at start): countdowns and retries wait in
#   the broker's celery_delayed_* queues, not in a worker, so a worker killed meanwhile loses
#   nothing and consumer_timeout no longer bounds them. Its unit is the whole second (Celery
#   truncates and refuses a countdown under 1 s): tasks_admin/base.py rounds a countdown up;
#   a countdown's routing key names its target queue, and a queue no worker has bound to
#   celery_delayed_delivery yet would drop it: start a worker for every queue before relying on it;
# - confirm_publish: a checkout or a retry returns only once the cluster has the message;
# - no global QoS (worker_detect_quorum_queues): quorum queues refuse it.
# RabbitMQ before 4.0.1 drops a dead-lettered message as a cycle if it still carries the x-death
# headers of its previous trip through the same delay queue (a second retry of one task):
# Celery 5.7 strips them from a retry (celery#9867, #10095); test_quorum_queues.py retries twice
# through the same delay queue on 3.10. A retry's routing key used to keep the previous delay
# prefix and grow until the message was stuck (celery#10111): kombu 5.7 strips it; the same
# test retries five times in a row.
# Quorum queues need RabbitMQ 3.10+ (message TTL, at-least-once dead-lettering for the delay
# queues) with the quorum_queue and stream_queue feature flags enabled.
BROKER_QUEUE_TYPE = env_str("CELERY_BROKER_QUEUE_TYPE", "classic")
if BROKER_QUEUE_TYPE == "classic":
    CELERY_TASK_QUEUES = [Queue(name, routing_key=name) for name in QUEUE_NAMES]
elif BROKER_QUEUE_TYPE == "quorum":
    TASK_EXCHANGE = Exchange("shop.tasks", type="topic", durable=True)
    CELERY_TASK_DEFAULT_EXCHANGE = TASK_EXCHANGE.name
    CELERY_TASK_DEFAULT_EXCHANGE_TYPE = TASK_EXCHANGE.type
    CELERY_TASK_DEFAULT_ROUTING_KEY = CELERY_TASK_DEFAULT_QUEUE
    CELERY_TASK_DEFAULT_QUEUE_TYPE = "quorum"
    CELERY_TASK_QUEUES = [
        Queue(name, TASK_EXCHANGE, routing_key=name, queue_arguments={"x-queue-type": "quorum"}) for name in QUEUE_NAMES
    ]
    CELERY_BROKER_NATIVE_DELAYED_DELIVERY_QUEUE_TYPE = "quorum"
    CELERY_WORKER_DETECT_QUORUM_QUEUES = True
    CELERY_BROKER_TRANSPORT_OPTIONS["confirm_publish"] = True
else:
    raise ImproperlyConfigured(f"CELERY_BROKER_QUEUE_TYPE must be classic or quorum, got {BROKER_QUEUE_TYPE!r}")
CELERY_TASK_ROUTES = {
    "orders.tasks.send_*": {"queue": "notifications"},
    "orders.tasks.*": {"queue": "orders"},
    "notifications.tasks.*": {"queue": "notifications"},
}

# The workflow's error callback is linked to the chord's header tasks too, so a failed
# header task stops the order at once instead of after its siblings finish. (Celery's
# future default; the callback is idempotent, so being called again by the chord is harmless.)
CELERY_TASK_ALLOW_ERROR_CB_ON_CHORD_HEADER = True

# Extra task modules for workers to load, besides every app's tasks.py (comma-separated).
CELERY_IMPORTS = env_list("CELERY_EXTRA_IMPORTS")

# django-celery-beat's DatabaseScheduler (schedules edited in the admin), dispatching only
# while it holds a lease in the database: start a beat on two hosts and one of them
# stands by, taking over BEAT_LOCK_SECONDS after the other stops renewing it.
CELERY_BEAT_SCHEDULER = "tasks_admin.beat:SingletonDatabaseScheduler"
BEAT_LOCK_SECONDS = env_int("BEAT_LOCK_SECONDS", 30)
# Save each entry's last_run_at right after it is sent (not every 3 minutes), so a beat
# taking over does not send again what the previous one already sent.
CELERY_BEAT_SYNC_EVERY = 1

CELERY_TIMEZONE = "UTC"
