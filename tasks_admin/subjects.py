"""What tasks are about: the generic reference from a task run to an app's object (an order, say),
and what the apps register so the console can find and show those objects. The task layer
imports no app: a task class names its subject (`subject_model = "orders.Order"`,
`subject_argument = 0`), a record keeps the model's label and the object's key, and an app
registers how a search term names its objects.
"""

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from celery import current_app
from django.apps import apps
from django.core.exceptions import ValidationError
from django.db.models import Model, Q
from django.urls import NoReverseMatch

from .adminkit import pk_url
from .models import TaskRecord, subject_key


@dataclass(frozen=True)
class Search:
    find: Callable[[str], Iterable[Model]]  # the objects a search term names (none: not this app's term)
    hint: str  # for the search box's help, e.g. "an order number (SO-…)"


_searches: list[Search] = []


def register_search(find: Callable[[str], Iterable[Model]], hint: str) -> None:
    """Let the task list find the tasks about the objects a search term names."""
    _searches.append(Search(find, hint))


def search(term: str) -> list[Model]:
    for registered in _searches:
        if found := list(registered.find(term)):
            return found
    return []


def hints() -> list[str]:
    return [registered.hint for registered in _searches]


def any_of(subjects: Iterable[Model]) -> Q:
    """Tasks about any of `subjects`."""
    keys: dict[str, list[str]] = defaultdict(list)
    for subject in subjects:
        keys[subject._meta.label_lower].append(subject_key(subject))
    condition = Q(pk__in=[])
    for label, ids in keys.items():
        condition |= Q(subject_type=label, subject_id__in=ids)
    return condition


def of_task(task_name: str, args) -> dict[str, str]:
    """The fields that point a run of `task_name` with `args` at its subject, as its task class
    names it; blank when it names none, or the argument is not a key of the subject's model."""
    task = current_app.tasks.get(task_name)
    label, index = getattr(task, "subject_model", ""), getattr(task, "subject_argument", None)
    if not label or index is None or len(args) <= index:
        return {}
    model = apps.get_model(label)
    try:
        key = subject_key(model=model, pk=args[index])
    except (ValidationError, ValueError, TypeError, AttributeError):  # not a key of that model: not its subject
        return {}
    return {"subject_type": model._meta.label_lower, "subject_id": key}


def of_object(subject: Model | None) -> dict[str, str]:
    """The fields that point a record at `subject`."""
    if subject is None:
        return {"subject_type": "", "subject_id": ""}
    return {"subject_type": subject._meta.label_lower, "subject_id": subject_key(subject)}


def attach(records: Iterable[TaskRecord]) -> None:
    """Fetch the subjects of a page of records, one query per kind of subject."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for record in records:
        if record.subject_type and record.subject_id:
            wanted[record.subject_type].add(record.subject_id)
    found: dict[tuple[str, str], Model] = {}
    for label, keys in wanted.items():
        model = apps.get_model(label)
        for subject in model._default_manager.filter(pk__in=[model._meta.pk.to_python(k) for k in keys]):
            found[label, subject_key(subject)] = subject
    for record in records:
        record._subject = found.get((record.subject_type, record.subject_id))


def admin_url(subject: Model) -> str:
    """The subject's page in the admin, if it has one."""
    meta = subject._meta
    try:
        return pk_url(f"admin:{meta.app_label}_{meta.model_name}_change", subject.pk)
    except NoReverseMatch:
        return ""
