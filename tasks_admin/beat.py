"""A celery beat scheduler that dispatches only while it holds a lease in the database.

Any number of `celery -A shop beat` may run (one per host, for availability); exactly
one of them sends tasks. Each tick renews its lease on the SchedulerLock row with a
conditional UPDATE (mine, or lapsed); the others find the lease taken, send nothing
and check again shortly. When the holder dies its lease lapses after
BEAT_LOCK_SECONDS and another beat takes over, first reloading the schedule from the
database: last_run_at is saved after every send (CELERY_BEAT_SYNC_EVERY = 1), so it
does not send again what its predecessor sent. On a clean shutdown the lease is
released at once.

The lease is measured on the database's clock, so clock skew between hosts cannot
give two beats the lease at the same time.
"""

import logging
import os
import socket
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, IntegrityError, InterfaceError, close_old_connections, transaction
from django.db.models import Q
from django.db.models.functions import Now
from django_celery_beat.schedulers import DatabaseScheduler

from .models import SchedulerLock

logger = logging.getLogger(__name__)

LOCK_NAME = "celery-beat"


def acquire_lease(owner: str, seconds: float, name: str = LOCK_NAME) -> bool:
    """Take or renew the lease for `seconds`; False while another owner holds it."""
    expires_at = Now() + timedelta(seconds=seconds)
    if SchedulerLock.objects.filter(Q(owner=owner) | Q(expires_at__lt=Now()), name=name).update(
        owner=owner, expires_at=expires_at
    ):
        return True
    if SchedulerLock.objects.filter(name=name).exists():
        return False  # held by another
    try:
        with transaction.atomic():
            SchedulerLock.objects.create(name=name, owner=owner, expires_at=expires_at)
    except IntegrityError:  # another beat created it just now
        return False
    return True


def release_lease(owner: str, name: str = LOCK_NAME) -> None:
    SchedulerLock.objects.filter(name=name, owner=owner).delete()


class SingletonDatabaseScheduler(DatabaseScheduler):
    """django-celery-beat's DatabaseScheduler, dispatching only while it holds the lease."""

    def __init__(self, *args, **kwargs) -> None:
        self.lease_seconds = settings.BEAT_LOCK_SECONDS
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leader: bool | None = None  # None: not asked yet
        self.closed = False
        super().__init__(*args, **kwargs)

    @property
    def renew_every(self) -> float:
        """Longest sleep between ticks: a third of the lease, so one late tick does not lose it."""
        return min(self.max_interval, self.lease_seconds / 3)

    def tick(self, *args, **kwargs) -> float:
        if self.closed:
            # Celery's SIGTERM handler closes the scheduler, then raises SystemExit wherever beat
            # is; raised inside a publish, kombu turns it into an error that beat only logs, and
            # beat would carry on, taking the lease again. Exit as the signal meant.
            raise SystemExit(0)
        if not self._hold_lease():
            return self.renew_every
        return min(super().tick(*args, **kwargs), self.renew_every)

    def _hold_lease(self) -> bool:
        was_leader = self.leader
        try:
            close_old_connections()  # beat has no request cycle to drop a broken connection
            self.leader = acquire_lease(self.owner, self.lease_seconds)
        except (DatabaseError, InterfaceError):
            logger.exception("beat %s: could not renew the scheduler lease; sending nothing", self.owner)
            self.leader = False
        if self.leader and not was_leader:
            logger.info("beat %s: holding the scheduler lease; sending due tasks", self.owner)
            # Whoever held it before sent tasks since this schedule was read: read it again.
            self._initial_read = True
            self._heap = None
        elif not self.leader and was_leader is not False:
            logger.info("beat %s: another beat holds the scheduler lease; standing by", self.owner)
        return self.leader

    def close(self) -> None:
        """Save the schedule, then release the lease so that another beat takes over at once."""
        self.closed = True
        try:
            super().close()
        finally:
            try:
                release_lease(self.owner)
            except (DatabaseError, InterfaceError):
                logger.exception("beat %s: could not release the scheduler lease", self.owner)
            else:
                if self.leader:
                    logger.info("beat %s: released the scheduler lease", self.owner)
            self.leader = False
