"""Task history, the audit trail of what staff did to tasks, and the beat scheduler's lock."""

from celery import states
from django.apps import apps
from django.conf import settings
from django.db import connection, models
from django.db.models import OuterRef, Q
from django.db.models.functions import Cast


# Not Celery states: a task of a canvas recorded by its sender before the canvas reaches it
# (not in the broker yet), and a task that will not run, or ran and did nothing, because the
# workflow it belongs to stopped or replaced it (`exception_message` says why).
def subject_key(subject: models.Model | None = None, *, model: type[models.Model] | None = None, pk=None) -> str:
    """A subject's key as the database stores it, as text: what `subject_id` holds, so that it
    equals CAST(pk AS text) in SQL (a UUID with dashes on PostgreSQL, as 32 hex digits on SQLite)."""
    model = model or type(subject)
    value = model._meta.pk.to_python(subject.pk if subject is not None else pk)
    return str(model._meta.pk.get_db_prep_value(value, connection))


def subject_of(label: str, key: str) -> models.Model | None:
    """The object a (subject_type, subject_id) pair points at, if it still exists."""
    if not label or not key:
        return None
    from_label = apps.get_model(label)
    return from_label._default_manager.filter(pk=from_label._meta.pk.to_python(key)).first()


PLANNED = "PLANNED"
SKIPPED = "SKIPPED"

# The states a run ends in: what /metrics counts (tasks_admin/tally.py).
FINAL_STATES = (states.SUCCESS, states.FAILURE, states.REVOKED, SKIPPED)

TASK_STATES = [
    (PLANNED, "waiting"),
    (states.PENDING, "queued"),
    (states.STARTED, "running"),
    (states.RETRY, "retry"),
    (states.SUCCESS, "succeeded"),
    (states.FAILURE, "failed"),
    (states.REVOKED, "revoked"),
    (SKIPPED, "not run"),
]


class AboutSubject(models.Model):
    """What a record is about (an order, say), when its task names it (`subject_model`,
    `subject_argument`: tasks_admin/subjects.py): a generic reference — the model's label and the
    object's key as the database stores it, as text — so that this layer knows no app's models,
    and a record never depends on a table of ids (content types) staying the same."""

    subject_type = models.CharField(max_length=100, blank=True, help_text="app_label.model_name")
    subject_id = models.CharField(max_length=64, blank=True)

    class Meta:
        abstract = True

    @property
    def subject(self) -> models.Model | None:
        """What the record is about, or None (fetched for a page of records at once by subjects.attach)."""
        if not hasattr(self, "_subject"):
            self._subject = subject_of(self.subject_type, self.subject_id)
        return self._subject


class TaskRecordQuerySet(models.QuerySet):
    def about(self, subject: models.Model) -> "TaskRecordQuerySet":
        """The tasks about `subject` (e.g. an order's workflow)."""
        return self.filter(subject_type=subject._meta.label_lower, subject_id=subject_key(subject))

    def about_any(self, model: type[models.Model], pks) -> "TaskRecordQuerySet":
        """The tasks about any of the `model` objects with these primary keys."""
        keys = [subject_key(model=model, pk=pk) for pk in pks]
        return self.filter(subject_type=model._meta.label_lower, subject_id__in=keys)

    def about_outer(self, model: type[models.Model]) -> "TaskRecordQuerySet":
        """In a subquery: the tasks about the outer query's row of `model`."""
        return self.filter(
            subject_type=model._meta.label_lower, subject_id=Cast(OuterRef("pk"), output_field=models.CharField())
        )

    def dead_letters(self) -> "TaskRecordQuerySet":
        """Failed for good and not yet dealt with: retries exhausted or a permanent error,
        not an outcome the task declares (a declined card), not retried or resolved."""
        return self.filter(state=states.FAILURE, expected_failure=False, resolved_at__isnull=True)


class TaskRecord(AboutSubject):
    """Every task the shop sends: captured when it is published, followed until it ends.

    `args` and `kwargs` hold the arguments as Celery's JSON serializer encodes them,
    type markers included, so a Decimal or a datetime is sent again exactly.
    django-celery-results' TaskResult (same task_id) keeps the result and traceback.
    """

    task_id = models.CharField(max_length=255, unique=True)
    task_name = models.CharField(max_length=255)
    state = models.CharField(max_length=16, choices=TASK_STATES, default=states.PENDING)
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    queue = models.CharField(max_length=100, blank=True)
    exchange = models.CharField(max_length=100, blank=True)
    routing_key = models.CharField(max_length=100, blank=True)
    priority = models.PositiveSmallIntegerField(null=True, blank=True)
    root_id = models.CharField(max_length=255, blank=True)
    parent_id = models.CharField(max_length=255, blank=True)
    group_id = models.CharField(max_length=255, blank=True)
    chord_id = models.CharField("chord callback id", max_length=255, blank=True)
    eta = models.DateTimeField(null=True, blank=True)
    expires = models.DateTimeField(null=True, blank=True)
    periodic_task_name = models.CharField(max_length=200, blank=True)
    retry_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retried_as")
    sent_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    runtime = models.FloatField(null=True, blank=True, help_text="Seconds")
    worker = models.CharField(max_length=255, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Times a worker started it")
    retries = models.PositiveIntegerField(default=0, help_text="Celery retries so far")
    exception_type = models.CharField(max_length=255, blank=True)
    exception_message = models.TextField(blank=True)
    # A failure the task declares as an outcome (Task.throws), e.g. a declined card:
    # recorded, but not a dead letter.
    expected_failure = models.BooleanField(default=False)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolution_note = models.TextField(blank=True)
    # Folded into TaskTally (tasks_admin/tally.py): counted by /metrics from there, not again.
    tallied = models.BooleanField(default=False)

    objects = TaskRecordQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        verbose_name = "task"
        indexes = [
            models.Index(fields=["subject_type", "subject_id"], name="taskrecord_subject"),
            models.Index(fields=["state", "-id"], name="taskrecord_state"),
            models.Index(fields=["task_name", "-id"], name="taskrecord_name"),
            models.Index(fields=["queue", "-id"], name="taskrecord_queue"),
            models.Index(fields=["sent_at"], name="taskrecord_sent_at"),
            models.Index(fields=["finished_at"], name="taskrecord_finished_at"),
            models.Index(fields=["root_id"], name="taskrecord_root"),
            models.Index(fields=["parent_id"], name="taskrecord_parent"),
            models.Index(fields=["periodic_task_name", "-id"], name="taskrecord_periodic"),
            models.Index(
                fields=["task_name", "exception_type"],
                condition=Q(state=states.FAILURE, expected_failure=False, resolved_at__isnull=True),
                name="taskrecord_dead_letters",
            ),
            # The dead-letter list, newest first, and its capped count: read from the index alone.
            models.Index(
                fields=["-id"],
                condition=Q(state=states.FAILURE, expected_failure=False, resolved_at__isnull=True),
                name="taskrecord_dead_letter_list",
            ),
            # The finished runs /metrics has not folded into its tally yet: a few minutes' worth.
            models.Index(
                fields=["finished_at"],
                condition=Q(state__in=FINAL_STATES, tallied=False),
                name="taskrecord_untallied",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task_name}[{self.task_id}]"


class TaskTally(models.Model):
    """Finished runs counted so far, by task and outcome: /metrics' task counter and histograms
    (tasks_admin/tally.py). Bucket lists are cumulative counts per tally.RUNTIME_BUCKETS and
    tally.WAIT_BUCKETS bound."""

    task_name = models.CharField(max_length=255)
    state = models.CharField(max_length=16)
    expected_failure = models.BooleanField()
    runs = models.BigIntegerField(default=0)
    runtime_count = models.BigIntegerField(default=0)
    runtime_sum = models.FloatField(default=0.0)
    runtime_buckets = models.JSONField(default=list)
    wait_count = models.BigIntegerField(default=0)
    wait_sum = models.FloatField(default=0.0)
    wait_buckets = models.JSONField(default=list)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["task_name", "state", "expected_failure"], name="tasktally_one_per_outcome")
        ]

    def __str__(self) -> str:
        return f"{self.task_name} {self.state}: {self.runs}"


class RowCount(models.Model):
    """Rows of an app's table by labels, a message's channel and status say: the gauges /metrics
    reads without counting the table (tasks_admin/rowcounts.py)."""

    series = models.CharField(max_length=100)  # the model's label, e.g. "orders.Order"
    labels = models.CharField(max_length=200)  # JSON list of the label values
    rows = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["series", "labels"], name="rowcount_one_per_labels")]

    def __str__(self) -> str:
        return f"{self.series} {self.labels}: {self.rows}"


class DeadLetterManager(models.Manager.from_queryset(TaskRecordQuerySet)):
    def get_queryset(self) -> TaskRecordQuerySet:
        return super().get_queryset().dead_letters()


class DeadLetter(TaskRecord):
    """Tasks that failed for good (retries exhausted or a permanent error) and wait for staff."""

    objects = DeadLetterManager()

    class Meta:
        proxy = True
        verbose_name = "dead letter"


class TaskAction(AboutSubject):
    """The audit trail: who did what to which task, when and why."""

    class Kind(models.TextChoices):
        RETRY = "retry"
        REVOKE = "revoke"
        TERMINATE = "terminate"
        CONTINUE_WORKFLOW = "continue_workflow", "continue workflow"
        RESOLVE = "resolve"
        RUN_PERIODIC = "run_periodic", "run periodic task"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    reason = models.TextField(blank=True)
    task = models.ForeignKey(TaskRecord, null=True, blank=True, on_delete=models.SET_NULL, related_name="actions")
    new_task_id = models.CharField(max_length=255, blank=True)
    periodic_task_name = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "audit record"
        permissions = [
            ("retry_task", "Can retry a failed or revoked task"),
            ("revoke_task", "Can revoke a queued task"),
            ("terminate_task", "Can terminate a running task"),
            ("continue_workflow", "Can continue a stopped workflow"),
            ("resolve_deadletter", "Can resolve a dead letter"),
            ("run_periodic_task", "Can run a periodic task now"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} by {self.user} at {self.created_at:%Y-%m-%d %H:%M}"


class SchedulerLock(models.Model):
    """A lease that lets exactly one `celery beat` dispatch; another takes over when it lapses."""

    name = models.CharField(max_length=100, unique=True)
    owner = models.CharField(max_length=255)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name}: {self.owner} until {self.expires_at}"


class ChordPart(models.Model):
    """A chord header task that has reported its end: one row per task, so that a task
    delivered twice is counted once (see tasks_admin/backend.py)."""

    group_id = models.CharField(max_length=255)
    task_id = models.CharField(max_length=255)
    state = models.CharField(max_length=16)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["group_id", "task_id"], name="chordpart_unique_task")]

    def __str__(self) -> str:
        return f"{self.group_id}: {self.task_id} {self.state}"


class AlertRule(models.Model):
    """A business alert rule's settings, edited in the admin: the rule itself (what it measures)
    is code registered through tasks_admin/alerts.py; a row is made for each on first evaluation."""

    key = models.SlugField(max_length=100, unique=True)
    enabled = models.BooleanField(default=True)
    threshold = models.FloatField(help_text="Open an alert above this value (the rule's unit)")
    window_minutes = models.FloatField(
        null=True, blank=True, help_text="The period the rule looks back over, for the rules that have one"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]
        verbose_name = "alert rule"
        constraints = [
            models.CheckConstraint(condition=Q(threshold__gte=0), name="alertrule_threshold_not_negative"),
            models.CheckConstraint(
                condition=Q(window_minutes__isnull=True) | Q(window_minutes__gt=0), name="alertrule_window_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.key


class Alert(models.Model):
    """One occurrence of a rule's condition about one thing (`subject_key`: a queue, a job, a task
    name, or blank for the shop as a whole): opened once, updated while it holds, resolved when
    it clears (tests/unit/test_alerts.py). At most one open alert per rule and subject key."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    subject_key = models.CharField(max_length=255, blank=True)
    summary = models.TextField()
    value = models.FloatField(help_text="What the rule measured, last time it held")
    # What it is about: [{"type": "app_label.model", "id": "…"}], linked in the admin and on the dashboard.
    subjects = models.JSONField(default=list, blank=True)
    link = models.CharField(max_length=500, blank=True, help_text="A list in the console showing the cause")
    opened_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    acknowledgement_note = models.TextField(blank=True)

    class Meta:
        ordering = ["-opened_at", "-id"]
        permissions = [("acknowledge_alert", "Can acknowledge an alert")]
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "subject_key"], condition=Q(resolved_at__isnull=True), name="alert_one_open_per_subject"
            )
        ]
        indexes = [models.Index(fields=["resolved_at", "-opened_at"], name="alert_open")]

    def __str__(self) -> str:
        return f"{self.rule.key}{f' ({self.subject_key})' if self.subject_key else ''}"

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


class AlertNotice(models.Model):
    """A notification of an alert's transition on one channel: made with the transition, in its
    transaction, at most once per (alert, transition, channel), so nothing is sent twice for one."""

    class Transition(models.TextChoices):
        OPENED = "opened"
        RESOLVED = "resolved"

    class Channel(models.TextChoices):
        EMAIL = "email", "e-mail"
        WEBHOOK = "webhook"

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="notices")
    transition = models.CharField(max_length=10, choices=Transition.choices)
    channel = models.CharField(max_length=10, choices=Channel.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["alert", "transition", "channel"], name="alertnotice_once_per_transition")
        ]

    def __str__(self) -> str:
        return f"{self.alert} {self.transition} by {self.channel}"

    @property
    def idempotency_key(self) -> str:
        return f"alert-{self.alert_id}-{self.transition}"
