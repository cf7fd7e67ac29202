"""The abstract mixin a django-tenants project adds to its tenant model."""

from django.db import models


class TenantBackupScheduleMixin(models.Model):
    """Backup schedule and retention fields that live on the tenant row (public schema)."""

    SCHEDULE_CHOICES = [
        ("disabled", "Disabled"),
        ("daily", "Daily"),
        ("every_12h", "Every 12 hours"),
        ("every_6h", "Every 6 hours"),
        ("weekly", "Weekly"),
        ("monthly", "Monthly"),
        ("scheduled", "Once, at a set time"),
    ]

    backup_schedule = models.CharField(
        "backup schedule", max_length=16, choices=SCHEDULE_CHOICES, default="disabled",
        help_text="How often this tenant is backed up automatically.",
    )
    backup_time = models.TimeField(
        "backup time", null=True, blank=True,
        help_text="Local wall-clock time of the backup (base time for every_12h / every_6h).",
    )
    backup_weekday = models.PositiveSmallIntegerField(
        "backup weekday", null=True, blank=True, help_text="0=Monday .. 6=Sunday, for weekly schedules.",
    )
    backup_day_of_month = models.PositiveSmallIntegerField(
        "backup day of month", null=True, blank=True, help_text="1..28, for monthly schedules.",
    )
    backup_timezone = models.CharField(
        "backup timezone", max_length=64, blank=True, default="",
        help_text="IANA time zone of backup_time; empty means the project's TIME_ZONE.",
    )
    next_scheduled_backup = models.DateTimeField(
        "next scheduled backup", null=True, blank=True, help_text="When a one-shot 'scheduled' backup runs.",
    )
    last_backup_at = models.DateTimeField(
        "last backup at", null=True, blank=True, help_text="When the last successful backup finished.",
    )
    next_backup_at = models.DateTimeField(
        "next backup at", null=True, blank=True, db_index=True, editable=False,
        help_text="Derived from the schedule fields; the dispatcher reads only this.",
    )
    backup_keep_daily = models.PositiveSmallIntegerField(
        "keep daily", default=7, help_text="Newest automatic backup of each of the last N days kept.",
    )
    backup_keep_weekly = models.PositiveSmallIntegerField(
        "keep weekly", default=4, help_text="Newest automatic backup of each of the last N weeks kept.",
    )
    backup_keep_monthly = models.PositiveSmallIntegerField(
        "keep monthly", default=12, help_text="Newest automatic backup of each of the last N months kept.",
    )

    class Meta:
        abstract = True
