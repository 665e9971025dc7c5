"""Business alerts: rules registered by the task layer and the apps, evaluated from the database
by a periodic job, each condition opened once as an `Alert`, updated while it holds, resolved
when it clears, acknowledged by staff; every transition notified once per channel.

A rule is code (`register_rule(Rule(...))`: what it measures, about what); its settings —
enabled, threshold, window — are an `AlertRule` row staff edit in the admin, made with the
rule's defaults the first time it is evaluated. The task layer's own rules are in
tasks_admin/alert_rules.py; an app registers its own from its `ready()` (the orders app:
orders/console.py). Proved by tests/unit/test_alerts.py and tests/integration/test_business_alerts.py.
"""

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.db.models import Model
from django.utils import timezone

from .models import Alert, AlertNotice, AlertRule, subject_key, subject_of
from .subjects import admin_url

logger = logging.getLogger(__name__)

MAX_SUBJECTS = 20  # objects an alert links to; its summary says how many there are


@dataclass(frozen=True)
class Finding:
    """A rule's condition holding about one thing (`key`: a queue, a job, a task name; blank
    when the rule is about the shop as a whole)."""

    summary: str
    value: float
    key: str = ""
    subjects: Sequence[Model] = ()  # what it is about, linked (the first MAX_SUBJECTS)
    link: str = ""  # a list in the console that shows the cause


Evaluate = Callable[[AlertRule, datetime], Iterable[Finding]]


@dataclass(frozen=True)
class Rule:
    key: str
    title: str
    unit: str  # of the threshold: "minutes", "dead letters", "%"
    default_threshold: float
    evaluate: Evaluate
    default_window_minutes: float | None = None  # None: the rule has no window
    help: str = ""


_rules: dict[str, Rule] = {}


def register_rule(rule: Rule) -> None:
    """Add a rule the alert job evaluates. Its key names its settings row: keep it stable."""
    if _rules.get(rule.key, rule) != rule:
        raise ImproperlyConfigured(f"Two alert rules are registered as {rule.key!r}")
    _rules[rule.key] = rule


def rules() -> list[Rule]:
    return list(_rules.values())


def rule_for(key: str) -> Rule | None:
    return _rules.get(key)


def rule_rows() -> dict[str, AlertRule]:
    """Every registered rule's settings row, made with its defaults if missing."""
    rows = {row.key: row for row in AlertRule.objects.filter(key__in=_rules)}
    for rule in rules():
        if rule.key not in rows:
            defaults = {"threshold": rule.default_threshold, "window_minutes": rule.default_window_minutes}
            try:
                with transaction.atomic():
                    rows[rule.key], _ = AlertRule.objects.get_or_create(key=rule.key, defaults=defaults)
            except IntegrityError:  # made meanwhile by an evaluation running elsewhere
                rows[rule.key] = AlertRule.objects.get(key=rule.key)
    return rows


def channels() -> list[str]:
    """Where transitions are notified: e-mail to ALERT_EMAILS, a POST to ALERT_WEBHOOK_URL."""
    found = []
    if settings.ALERT_EMAILS:
        found.append(AlertNotice.Channel.EMAIL)
    if settings.ALERT_WEBHOOK_URL:
        found.append(AlertNotice.Channel.WEBHOOK)
    return found


def evaluate(now: datetime | None = None) -> list[int]:
    """Evaluate every rule; open, update and resolve alerts. Returns the ids of the notices the
    transitions made, for the caller to send (tasks_admin/tasks.py)."""
    now = now or timezone.now()
    notices: list[int] = []
    for key, row in rule_rows().items():
        rule = _rules[key]
        try:
            findings = {finding.key: finding for finding in rule.evaluate(row, now)} if row.enabled else {}
        except Exception:  # one broken rule must not silence the others; its alerts stay as they are
            logger.exception("alert rule %s could not be evaluated", key)
            continue
        open_alerts = {alert.subject_key: alert for alert in Alert.objects.filter(rule=row, resolved_at__isnull=True)}
        for subject, finding in findings.items():
            if subject in open_alerts:
                _update(open_alerts[subject], finding, now)
            else:
                notices += _open(row, finding, now)
        for subject, alert in open_alerts.items():
            if subject not in findings:
                notices += _resolve(alert, now)
    return notices


def _fields(finding: Finding) -> dict:
    return {
        "summary": finding.summary,
        "value": finding.value,
        "subjects": [
            {"type": subject._meta.label_lower, "id": subject_key(subject)}
            for subject in list(finding.subjects)[:MAX_SUBJECTS]
        ],
        "link": finding.link,
    }


def _open(row: AlertRule, finding: Finding, now: datetime) -> list[int]:
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                rule=row, subject_key=finding.key, opened_at=now, last_seen_at=now, **_fields(finding)
            )
            notices = _notify(alert, AlertNotice.Transition.OPENED)
    except IntegrityError:  # opened meanwhile by another evaluation: that one notifies
        return []
    logger.warning("alert opened: %s: %s", alert, finding.summary)
    return notices


def _update(alert: Alert, finding: Finding, now: datetime) -> None:
    Alert.objects.filter(pk=alert.pk, resolved_at__isnull=True).update(last_seen_at=now, **_fields(finding))


def _resolve(alert: Alert, now: datetime) -> list[int]:
    with transaction.atomic():
        # Conditional: of two evaluations resolving it, one does, and notifies.
        if not Alert.objects.filter(pk=alert.pk, resolved_at__isnull=True).update(resolved_at=now):
            return []
        notices = _notify(alert, AlertNotice.Transition.RESOLVED)
    logger.warning("alert resolved: %s", alert)
    return notices


def _notify(alert: Alert, transition: str) -> list[int]:
    return [
        AlertNotice.objects.create(alert=alert, transition=transition, channel=channel).pk for channel in channels()
    ]


def unsent_notices(older_than: datetime) -> list[int]:
    """Notices made before `older_than` that no delivery ever tried: their task was lost (the
    process died between the transition's commit and the send). Sent again by the next evaluation."""
    return list(
        AlertNotice.objects.filter(sent_at__isnull=True, attempts=0, created_at__lt=older_than).values_list(
            "pk", flat=True
        )
    )


def acknowledge(alert: Alert, *, user: AbstractBaseUser, note: str = "") -> bool:
    """Staff take an alert on: who, when, why. Once: False if someone already did."""
    return bool(
        Alert.objects.filter(pk=alert.pk, acknowledged_at__isnull=True).update(
            acknowledged_at=timezone.now(), acknowledged_by=user, acknowledgement_note=note
        )
    )


def title(alert: Alert) -> str:
    """The rule's title (its key if no longer registered)."""
    rule = _rules.get(alert.rule.key)
    return rule.title if rule else alert.rule.key


def concerned(alert: Alert) -> list[tuple[str, str]]:
    """What the alert is about, as (name, admin page) pairs: blank page for one since deleted."""
    found = []
    for ref in alert.subjects:
        subject = subject_of(ref["type"], ref["id"])
        found.append((str(subject or ref["id"]), admin_url(subject) if subject is not None else ""))
    return found
