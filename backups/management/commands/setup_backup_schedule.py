"""`manage.py setup_backup_schedule`: install beat's entries (dispatcher tick, reaper) in the database scheduler."""

from django.core.management.base import BaseCommand
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from backups.conf import backups_settings
from backups.queues import (
    BACKUP_PUBLIC,
    CHECK_OVERDUE,
    DISPATCH,
    DISPATCH_DUE,
    DUMP,
    EXPIRE_SIDE_COPIES,
    HOUSEKEEPING,
    REAP_STUCK,
    RECONCILE,
    VERIFY_DRILLS,
)

ENTRIES = (
    ("backups: dispatch due backups", DISPATCH_DUE, DISPATCH, "BACKUPS_TICK_SECONDS"),
    ("backups: reap stuck backups", REAP_STUCK, HOUSEKEEPING, "BACKUPS_REAPER_SECONDS"),
    ("backups: check overdue backups", CHECK_OVERDUE, HOUSEKEEPING,
     "BACKUPS_OVERDUE_CHECK_SECONDS"),
    ("backups: verify drills", VERIFY_DRILLS, HOUSEKEEPING, "BACKUPS_DRILL_SECONDS"),
    ("backups: reconcile storage", RECONCILE, HOUSEKEEPING, "BACKUPS_RECONCILE_SECONDS"),
    ("backups: public schema", BACKUP_PUBLIC, DUMP, "BACKUPS_PUBLIC_BACKUP_SECONDS"),
    ("backups: drop expired side copies", EXPIRE_SIDE_COPIES, HOUSEKEEPING, "BACKUPS_SIDE_COPY_CHECK_SECONDS"),
)


class Command(BaseCommand):
    help = "Create or update the periodic tasks beat runs (idempotent; run on every deploy)."

    def handle(self, *args, **options) -> None:
        for name, task, queue, setting in ENTRIES:
            every = int(getattr(backups_settings, setting))  # seconds: an int for IntervalSchedule
            enabled = every > 0  # 0 turns an entry off (e.g. BACKUPS_DRILL_SECONDS=0: no scheduled drills)
            every = every if enabled else 86400
            interval, _ = IntervalSchedule.objects.get_or_create(every=every, period=IntervalSchedule.SECONDS)
            # expire_seconds, not expires: django-celery-beat turns `expires` into a date that disables the task
            PeriodicTask.objects.update_or_create(
                name=name,
                defaults={"interval": interval, "crontab": None, "task": task, "queue": queue,
                          "expire_seconds": every, "enabled": enabled, "one_off": False},
            )
            self.stdout.write(f"{name}: every {every} s on {queue}" if enabled else f"{name}: off ({setting}=0)")
