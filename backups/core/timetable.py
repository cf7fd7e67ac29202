"""When a tenant's next automatic backup is due.

Pure functions (no Django, no database) so the calendar and daylight-saving
rules can be tested exhaustively; the model layer turns its fields into a
:class:`ScheduleSpec` and stores what :func:`next_run_after` returns.

Schedules are wall-clock schedules in the tenant's IANA time zone: "daily at
02:30" means 02:30 on the tenant's clock, whatever its UTC offset is that day.
Daylight saving is resolved with PEP 495 ``fold=0`` so that every local slot
runs exactly once:

* Nonexistent local time (spring forward): the slot is read with the UTC
  offset in force *before* the transition, so it runs once that day, as far
  past the gap as it was into it.  In Europe/Madrid on 2026-03-29 clocks jump
  02:00 -> 03:00; a 02:30 slot runs at 03:30 CEST (01:30 UTC).  Where the
  gap straddles midnight the run lands just after midnight: America/Nuuk
  jumps 23:00 -> 00:00 on 2026-03-28, so that day's 23:30 slot runs at
  00:30 on the 29th, which then also has its own 23:30 run.
* Repeated local time (fall back): the slot runs once, at the first
  occurrence.  In Europe/Madrid on 2026-10-25, 02:30 runs at 02:30 CEST
  (00:30 UTC) and not again at 02:30 CET.
* ``every_12h``/``every_6h`` are wall-clock slots too (a 15:00 ``every_12h``
  runs at 03:00 and 15:00 local), each resolved by the two rules above, so
  the real interval between runs can be an hour off around a transition.
* Slots that resolve to the same UTC instant are returned once, because each
  call returns the first slot *strictly* after the given instant.  In
  practice this happens only when a whole local day is skipped
  (Pacific/Apia, 2011-12-30): that day's slot lands on the next day's and
  the pair runs once.
"""

from __future__ import annotations

import bisect
import datetime
import functools
import hashlib
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "DAILY",
    "DISABLED",
    "EVERY_6H",
    "EVERY_12H",
    "MONTHLY",
    "SCHEDULE_CHOICES",
    "SCHEDULED",
    "WEEKLY",
    "ScheduleSpec",
    "next_run_after",
    "next_runs_after",
    "slot_offset_seconds",
    "validate_schedule",
]

DISABLED = "disabled"
DAILY = "daily"
EVERY_12H = "every_12h"
EVERY_6H = "every_6h"
WEEKLY = "weekly"
MONTHLY = "monthly"
SCHEDULED = "scheduled"

SCHEDULE_CHOICES: tuple[tuple[str, str], ...] = (
    (DISABLED, "Disabled"),
    (DAILY, "Daily"),
    (EVERY_12H, "Every 12 hours"),
    (EVERY_6H, "Every 6 hours"),
    (WEEKLY, "Weekly"),
    (MONTHLY, "Monthly"),
    (SCHEDULED, "Once, at a scheduled date and time"),
)

_PERIOD_SECONDS: dict[str, int] = {
    DAILY: 86_400,
    EVERY_12H: 43_200,
    EVERY_6H: 21_600,
    WEEKLY: 86_400,
    MONTHLY: 86_400,
}
_RECURRING = frozenset(_PERIOD_SECONDS)
_KNOWN = frozenset(value for value, _ in SCHEDULE_CHOICES)

# Zone names that resolve on the server but are not a place a tenant lives in.
_NON_TENANT_ZONES = frozenset({"localtime", "posixrules", "Factory"})

# A local date can be at most 26 hours (UTC-12 .. UTC+14) away from the UTC
# instant it describes, so slots more than two local days apart are in order.
_SCAN_MARGIN = datetime.timedelta(days=2)
_ONE_DAY = datetime.timedelta(days=1)
# Past the latest instant asked about, the slots resolved by next_runs_after: a month (monthly's longest wait) and
# the scan margin.
_HORIZON = datetime.timedelta(days=31) + _SCAN_MARGIN

_MESSAGES: dict[str, str] = {
    "unknown_schedule": (
        "Choose a valid backup schedule: disabled, daily, every_12h, every_6h, weekly, monthly or scheduled."
    ),
    "time_required": "A backup time is required for this schedule.",
    "weekday_required": "A weekday (0 for Monday to 6 for Sunday) is required for weekly backups.",
    "weekday_range": "The weekday must be a whole number from 0 (Monday) to 6 (Sunday).",
    "day_required": "A day of the month is required for monthly backups.",
    "day_range": "The day of the month must be a whole number from 1 to 28, so that it exists in every month.",
    "timezone_invalid": "Enter a valid IANA time zone name, such as Europe/Madrid.",
    "scheduled_required": "A date and time is required for a scheduled backup.",
    "scheduled_naive": "The scheduled date and time must include a time zone.",
    "scheduled_past": "The scheduled date and time must be in the future.",
}


@dataclass(frozen=True)
class ScheduleSpec:
    """A tenant's backup schedule, independent of how it is stored.

    Fields a schedule does not use (``weekday`` for ``daily``, say) are
    ignored, so a form can keep stale values while the schedule changes.
    """

    schedule: str
    backup_time: datetime.time | None
    weekday: int | None
    day_of_month: int | None
    timezone: str
    scheduled_at: datetime.datetime | None


def next_run_after(spec: ScheduleSpec, after: datetime.datetime) -> datetime.datetime | None:
    """Return the first slot strictly after ``after`` as an aware UTC datetime.

    "Strictly" lets the caller feed the previous result back in to walk the
    schedule without ever getting the same run twice.  Returns ``None`` for
    ``disabled``, and for ``scheduled`` once ``scheduled_at <= after``.

    Raises ``ValueError`` for a naive ``after`` or ``scheduled_at``, and for
    a recurring spec that :func:`validate_schedule` would refuse.  A past or
    missing ``scheduled_at`` is not an error here: there is just nothing left
    to run.
    """
    _require_aware(after, "after")
    if spec.schedule == DISABLED:
        return None
    if spec.schedule == SCHEDULED:
        return _next_one_off(spec.scheduled_at, after)
    if spec.schedule not in _RECURRING:
        raise ValueError(_MESSAGES["unknown_schedule"])
    errors = _recurring_errors(spec)
    if errors:
        raise ValueError(" ".join(errors.values()))
    return _next_recurring(spec, after)


def next_runs_after(spec: ScheduleSpec, afters: Sequence[datetime.datetime]) -> list[datetime.datetime | None]:
    """:func:`next_run_after` for many instants of one schedule: the same answers, at a bisect each.

    The dispatcher asks this for thousands of tenants sharing a schedule whose instants differ only by
    their spread offsets. The schedule's slots from two local days before the earliest instant to a
    month past the latest are resolved once (each a UTC instant, as the scan resolves it); each answer is
    the first of them strictly after its instant, which is the scan's answer: a slot of an earlier day
    lies before the instant, and no schedule waits more than a month between slots. Raises like
    :func:`next_run_after`.
    """
    if not afters:
        return []
    for after in afters:
        _require_aware(after, "after")
    if spec.schedule in (DISABLED, SCHEDULED) or len(afters) < 2:
        return [next_run_after(spec, after) for after in afters]
    if spec.schedule not in _RECURRING:
        raise ValueError(_MESSAGES["unknown_schedule"])
    errors = _recurring_errors(spec)
    if errors:
        raise ValueError(" ".join(errors.values()))
    zone = _zone(spec.timezone)
    times, runs_on = _slot_times(spec), _date_filter(spec)
    day, last = min(afters).astimezone(zone).date() - _SCAN_MARGIN, max(afters).astimezone(zone).date() + _HORIZON
    instants: set[datetime.datetime] = set()
    while day <= last:
        if runs_on(day):
            instants.update(_resolve(day, slot, zone) for slot in times)
        day += _ONE_DAY
    ordered = sorted(instants)
    answers: list[datetime.datetime | None] = []
    for after in afters:
        i = bisect.bisect_right(ordered, after)
        answers.append(ordered[i] if i < len(ordered) else next_run_after(spec, after))
    return answers


def validate_schedule(spec: ScheduleSpec, *, now: datetime.datetime) -> dict[str, str]:
    """Return ``{field name: message}`` for every problem, empty when valid.

    Field names are the tenant model's, so a form or serializer can attach
    each message to its field.  ``now`` is needed to refuse a one-off backup
    in the past.
    """
    _require_aware(now, "now")
    if spec.schedule not in _KNOWN:
        return {"backup_schedule": _MESSAGES["unknown_schedule"]} | _timezone_errors(spec)
    if spec.schedule == SCHEDULED:
        return _timezone_errors(spec) | _one_off_errors(spec.scheduled_at, now)
    if spec.schedule in _RECURRING:
        return _recurring_errors(spec)
    return _timezone_errors(spec)


def slot_offset_seconds(key: str, window_seconds: int) -> int:
    """Return a stable offset in ``[0, window_seconds)`` for ``key``.

    Spreads tenants that share a slot (every "daily at 02:00" tenant) over a
    window without storing anything: the same key always gets the same
    offset, in every process and Python run.  Built-in ``hash()`` is salted
    per process, so a keyed digest is used instead.
    """
    if isinstance(window_seconds, bool) or not isinstance(window_seconds, int) or window_seconds <= 0:
        raise ValueError("window_seconds must be a positive integer.")
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8, person=b"tenant-slot").digest()
    return int.from_bytes(digest, "big") % window_seconds


def _next_one_off(scheduled_at: datetime.datetime | None, after: datetime.datetime) -> datetime.datetime | None:
    if scheduled_at is None:
        return None
    _require_aware(scheduled_at, "scheduled_at")
    if scheduled_at <= after:
        return None
    return scheduled_at.astimezone(datetime.UTC)


def _next_recurring(spec: ScheduleSpec, after: datetime.datetime) -> datetime.datetime:
    """Scan local dates and keep the earliest slot after ``after``.

    Around a transition local order and UTC order can disagree (02:30 in the
    gap resolves later than 03:00), so the scan takes the minimum over a
    margin instead of stopping at the first match.
    """
    zone = _zone(spec.timezone)
    times = _slot_times(spec)
    runs_on = _date_filter(spec)
    day = after.astimezone(zone).date() - _SCAN_MARGIN
    best: datetime.datetime | None = None
    stop: datetime.date | None = None
    while stop is None or day <= stop:
        if runs_on(day):
            for instant in (_resolve(day, slot, zone) for slot in times):
                if instant > after and (best is None or instant < best):
                    best = instant
                    stop = stop or day + _SCAN_MARGIN
        day += _ONE_DAY
    assert best is not None
    return best


def _resolve(day: datetime.date, slot: datetime.time, zone: zoneinfo.ZoneInfo) -> datetime.datetime:
    """Turn a local date and wall time into UTC with the module's DST rules."""
    local = datetime.datetime.combine(day, slot, tzinfo=zone).replace(fold=0)
    return local.astimezone(datetime.UTC)


def _slot_times(spec: ScheduleSpec) -> tuple[datetime.time, ...]:
    """Wall times of the day's slots: ``backup_time`` and its period multiples."""
    base = spec.backup_time
    assert base is not None
    period = _PERIOD_SECONDS[spec.schedule]
    base_seconds = base.hour * 3600 + base.minute * 60 + base.second
    seconds = sorted({(base_seconds + k * period) % 86_400 for k in range(86_400 // period)})
    return tuple(datetime.time(s // 3600, s % 3600 // 60, s % 60, base.microsecond) for s in seconds)


def _date_filter(spec: ScheduleSpec) -> Callable[[datetime.date], bool]:
    if spec.schedule == WEEKLY:
        return lambda day: day.weekday() == spec.weekday
    if spec.schedule == MONTHLY:
        return lambda day: day.day == spec.day_of_month
    return lambda day: True


def _recurring_errors(spec: ScheduleSpec) -> dict[str, str]:
    errors = _timezone_errors(spec)
    if spec.backup_time is None:
        errors["backup_time"] = _MESSAGES["time_required"]
    if spec.schedule == WEEKLY:
        if spec.weekday is None:
            errors["backup_weekday"] = _MESSAGES["weekday_required"]
        elif not _is_int_in(spec.weekday, 0, 6):
            errors["backup_weekday"] = _MESSAGES["weekday_range"]
    if spec.schedule == MONTHLY:
        if spec.day_of_month is None:
            errors["backup_day_of_month"] = _MESSAGES["day_required"]
        elif not _is_int_in(spec.day_of_month, 1, 28):
            errors["backup_day_of_month"] = _MESSAGES["day_range"]
    return errors


def _one_off_errors(scheduled_at: datetime.datetime | None, now: datetime.datetime) -> dict[str, str]:
    if scheduled_at is None:
        return {"next_scheduled_backup": _MESSAGES["scheduled_required"]}
    if not _is_aware(scheduled_at):
        return {"next_scheduled_backup": _MESSAGES["scheduled_naive"]}
    if scheduled_at <= now:
        return {"next_scheduled_backup": _MESSAGES["scheduled_past"]}
    return {}


def _timezone_errors(spec: ScheduleSpec) -> dict[str, str]:
    if _is_valid_zone_name(spec.timezone):
        return {}
    return {"backup_timezone": _MESSAGES["timezone_invalid"]}


def _is_int_in(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


@functools.cache
def _tenant_zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) - _NON_TENANT_ZONES


def _is_valid_zone_name(name: object) -> bool:
    return isinstance(name, str) and name in _tenant_zone_names()


def _zone(name: str) -> zoneinfo.ZoneInfo:
    if not _is_valid_zone_name(name):
        raise ValueError(_MESSAGES["timezone_invalid"])
    return zoneinfo.ZoneInfo(name)


def _is_aware(value: datetime.datetime) -> bool:
    return value.tzinfo is not None and value.tzinfo.utcoffset(value) is not None


def _require_aware(value: datetime.datetime, name: str) -> None:
    if not _is_aware(value):
        raise ValueError(f"{name} must be a timezone-aware datetime.")
