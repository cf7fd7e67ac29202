"""The abstract mixin a django-tenants project adds to its tenant model."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from backups.core.timetable import DISABLED, SCHEDULE_CHOICES, SCHEDULED, ScheduleSpec, validate_schedule

SCHEDULE_FIELDS = ("backup_schedule", "backup_time", "backup_weekday", "backup_day_of_month", "backup_timezone",
                   "next_scheduled_backup")


class TenantBackupScheduleMixin(models.Model):
    """Backup schedule and retention fields that live on the tenant row (public schema)."""

    tenant_uid = models.UUIDField(
        "backup identity", default=uuid.uuid4, unique=True, editable=False,
        help_text="Never reused: every backup, event, restore job, link and token is bound to it, so a later "
                  "tenant given the same schema name sees nothing of this one's.",
    )

    backup_schedule = models.CharField(
        "backup schedule", max_length=16, choices=SCHEDULE_CHOICES, default=DISABLED,
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
    backup_overdue_since = models.DateTimeField(
        "backup overdue since", null=True, blank=True, editable=False,
        help_text="When the overdue check first found this tenant's automatic backups behind (ops were told); "
                  "cleared once they are on time again.",
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

    @property
    def backup_schedule_spec(self) -> ScheduleSpec:
        """The schedule fields as the pure scheduling functions take them."""
        self._coerce_schedule_fields()
        return ScheduleSpec(
            schedule=self.backup_schedule, backup_time=self.backup_time, weekday=self.backup_weekday,
            day_of_month=self.backup_day_of_month, timezone=self.backup_timezone or settings.TIME_ZONE,
            scheduled_at=self.next_scheduled_backup,
        )

    def _coerce_schedule_fields(self) -> None:
        """The schedule fields as their model fields read them. Django accepts `clinica.backup_time = '02:00:00'`
        (and a naive datetime, made aware in the default time zone) and converts on save; the schedule is
        computed before that, so it converts the same way first (garbage raises ValidationError, as on save)."""
        for name in ("backup_time", "backup_weekday", "backup_day_of_month", "next_scheduled_backup"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = self._meta.get_field(name).to_python(value)
            if isinstance(value, datetime) and timezone.is_naive(value):
                value = timezone.make_aware(value, timezone.get_default_timezone())
            setattr(self, name, value)

    def compute_next_backup_at(self, after: datetime | None = None) -> datetime | None:
        """The first slot strictly after `after` (default now), shifted by the tenant's stable spread offset."""
        from backups.schedule.times import next_backup_times

        return next_backup_times(self.backup_schedule_spec, [self.schema_name], after or timezone.now())[0]

    def clean(self) -> None:
        super().clean()
        errors = validate_schedule(self.backup_schedule_spec, now=timezone.now())
        if self.backup_schedule == SCHEDULED and self.pk and "next_scheduled_backup" in errors:
            previous = type(self).objects.filter(pk=self.pk).values_list("next_scheduled_backup", flat=True).first()
            if previous == self.next_scheduled_backup:
                errors.pop("next_scheduled_backup")  # unchanged one-shot: editing other fields is fine
        if errors:
            raise ValidationError(errors)

    def _schedule_changed(self) -> bool:
        """Whether a full save changes a schedule field: editing a tenant's name must not move a due slot."""
        if self.pk is None or self._state.adding:
            return True
        stored = type(self).objects.filter(pk=self.pk).values(*SCHEDULE_FIELDS, "next_backup_at").first()
        if stored is None:
            return True
        if stored.pop("next_backup_at") is None and self.backup_schedule != DISABLED:
            return True
        return any(getattr(self, name) != value for name, value in stored.items())

    def save(self, *args, **kwargs) -> None:
        self._coerce_schedule_fields()
        update_fields = kwargs.get("update_fields")
        if (set(update_fields) & set(SCHEDULE_FIELDS)) if update_fields is not None else self._schedule_changed():
            self.next_backup_at = self.compute_next_backup_at()
            if self.next_backup_at is None and self.backup_schedule == SCHEDULED and self.next_scheduled_backup:
                # A one-shot whose time passed before it was saved (full_clean() refuses it, a shell does not): a
                # missed slot like any other, run at the next tick, never silently dropped. Once claimed, the
                # dispatcher turns the schedule off, so it runs once.
                self.next_backup_at = self.next_scheduled_backup
            if update_fields is not None:
                kwargs["update_fields"] = set(update_fields) | {"next_backup_at"}
        super().save(*args, **kwargs)
