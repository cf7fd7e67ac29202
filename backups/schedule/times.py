"""Spreading tenants inside their slot, so 2,000 tenants due at 02:00 do not all start at 02:00, and each
tenant's next backup time with its spread applied."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from backups.conf import backups_settings
from backups.core.timetable import SCHEDULED, ScheduleSpec, next_run_after, next_runs_after, slot_offset_seconds


def spread_offset(schema_name: str) -> timedelta:
    """The tenant's stable offset in [0, BACKUPS_SPREAD_SECONDS): same tenant, same offset, on every host."""
    window = int(backups_settings.BACKUPS_SPREAD_SECONDS)
    return timedelta(seconds=slot_offset_seconds(schema_name, window)) if window > 0 else timedelta(0)


def next_backup_times(spec: ScheduleSpec, schemas: Sequence[str], after: datetime) -> list[datetime | None]:
    """Each schema's next backup strictly after `after` on one schedule: the slot shifted by the schema's spread
    offset (a one-shot keeps its exact time). The one place the offset rule lives, for a tenant saved and for
    thousands advanced by a tick (the schedule's slots are resolved once for all of them)."""
    if spec.schedule == SCHEDULED:
        return [next_run_after(spec, after) for _ in schemas]
    offsets = [spread_offset(schema) for schema in schemas]
    slots = next_runs_after(spec, [after - offset for offset in offsets])
    return [None if slot is None else slot + offset for slot, offset in zip(slots, offsets, strict=True)]
