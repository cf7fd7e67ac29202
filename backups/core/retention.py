"""Which of a tenant's backups can be deleted.

Pure (no Django, no database) so the policy can be tested on synthetic years
of history; the service layer maps records to :class:`BackupInfo` and deletes
the ids :func:`backups_to_delete` returns.

Rules, in order of precedence:

1. Safety stop: if the newest *finished* (succeeded or failed) backup failed,
   nothing is deleted.  A tenant whose backups are breaking keeps every old
   copy until a new one succeeds.
2. The newest succeeded backup of any type is never deleted.
3. Only ``succeeded`` and ``failed`` records are ever deleted; ``queued``,
   ``running`` and any unknown status are left alone.
4. Automatic succeeded backups follow grandfather-father-son.  "Keep the last
   N days" means what restic's and borg's ``--keep-daily N`` mean: the newest
   backup of each of the N most recent calendar days *that have a backup*
   (days in the tenant's time zone); likewise ISO weeks (``keep_weekly``) and
   calendar months (``keep_monthly``).  The three kept sets are united, and
   everything else automatic and succeeded is deleted.  Gaps in the history
   therefore never shorten what is kept: a tenant that was down for a month
   still keeps its last ``keep_daily`` daily backups.
5. Manual succeeded backups are kept until deleted by hand, unless
   ``manual_retention_days`` is set, in which case they are deleted once
   older than that many days.
5a. Safety backups a replace restore takes (``pre_restore``) are deleted once
   older than ``pre_restore_retention_days`` (``manual_retention_days`` when
   that is None), except the newest one: the last restore can always be
   undone, however long ago it ran.
6. Failed records of any type are deleted once older than ``keep_daily``
   days: they hold no data, and are kept only as long as the daily history
   so recent failures stay visible.

"Newest" orders by ``created_at`` and then by ``id``, so equal timestamps
still give one answer.
"""

from __future__ import annotations

import datetime
import zoneinfo
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "AUTOMATIC",
    "FAILED",
    "PRE_RESTORE",
    "SUCCEEDED",
    "BackupInfo",
    "RetentionPolicy",
    "backups_to_delete",
    "gfs_keep",
    "lock_horizons",
]

SUCCEEDED = "succeeded"
FAILED = "failed"
AUTOMATIC = "automatic"
PRE_RESTORE = "pre_restore"
_FINISHED = frozenset({SUCCEEDED, FAILED})


@dataclass(frozen=True)
class RetentionPolicy:
    """How many daily, weekly and monthly automatic backups to keep, and how long manual ones live.

    Refuses negative or non-integer counts at construction: a bad value read
    from the database must fail loudly rather than delete the wrong backups.
    """

    keep_daily: int = 7
    keep_weekly: int = 4
    keep_monthly: int = 12
    manual_retention_days: int | None = None
    pre_restore_retention_days: int | None = None

    def __post_init__(self) -> None:
        for name in ("keep_daily", "keep_weekly", "keep_monthly"):
            _require_count(name, getattr(self, name))
        for name in ("manual_retention_days", "pre_restore_retention_days"):
            if getattr(self, name) is not None:
                _require_count(name, getattr(self, name))


@dataclass(frozen=True)
class BackupInfo:
    """What retention needs to know of one backup record."""

    id: int
    created_at: datetime.datetime
    status: str
    backup_type: str


def backups_to_delete(
    backups: Sequence[BackupInfo],
    policy: RetentionPolicy,
    *,
    now: datetime.datetime,
    timezone: str = "UTC",
) -> set[int]:
    """Return the ids of the backups the policy no longer keeps.

    See the module docstring for the rules.  Raises ``ValueError`` for a naive
    ``now`` or ``created_at`` and for an unknown time zone, before deciding
    anything.
    """
    _require_aware(now, "now")
    for backup in backups:
        _require_aware(backup.created_at, f"created_at of backup {backup.id}")
    zone = _zone(timezone)
    finished = [b for b in backups if b.status in _FINISHED]
    if not finished:
        return set()
    newest = max(finished, key=_recency)
    if newest.status != SUCCEEDED:
        return set()
    doomed = (
        _expired_automatic(backups, policy, zone)
        | _expired_manual(backups, policy, now)
        | _expired_pre_restore(backups, policy, now)
        | _expired_failures(backups, policy, now)
    )
    return doomed - {newest.id}


def gfs_keep(backups: Sequence[BackupInfo], policy: RetentionPolicy, *, timezone: str = "UTC") -> set[int]:
    """Return the ids of the automatic successes the daily, weekly and monthly rules keep."""
    return _gfs_keep(_automatic_successes(backups), policy, _zone(timezone))


def lock_horizons(
    backups: Sequence[BackupInfo],
    policy: RetentionPolicy,
    *,
    now: datetime.datetime,
    timezone: str = "UTC",
    rolling_days: float = 7,
) -> dict[int, datetime.datetime]:
    """Until when each backup the policy keeps today should stay locked (S3 Object Lock), by the rule keeping it.

    A daily keeper drops out after ``keep_daily`` more days with backups, a weekly one after ``keep_weekly`` weeks,
    a monthly one after ``keep_monthly`` months: its lock runs one period past that (never shorter than the time
    retention keeps it while backups arrive every period). Backups kept without an end (the newest success,
    manual ones without ``manual_retention_days``, the newest safety backup) are locked ``rolling_days`` past
    ``now``, renewed by the next pass. Those the policy deletes get no horizon.
    """
    _require_aware(now, "now")
    zone = _zone(timezone)
    doomed = backups_to_delete(backups, policy, now=now, timezone=timezone)
    automatic = _automatic_successes(backups)
    day = datetime.timedelta(days=1)

    def local_day(b: BackupInfo) -> datetime.date:
        return b.created_at.astimezone(zone).date()

    rules = (
        (_newest_of_recent_periods(automatic, policy.keep_daily, local_day), (policy.keep_daily + 1) * day),
        (_newest_of_recent_periods(automatic, policy.keep_weekly, lambda b: local_day(b).isocalendar()[:2]),
         (policy.keep_weekly + 1) * 7 * day),
        (_newest_of_recent_periods(automatic, policy.keep_monthly, lambda b: (local_day(b).year, local_day(b).month)),
         (policy.keep_monthly + 1) * 31 * day),
    )
    rolling = now + rolling_days * day
    succeeded = [b for b in backups if b.status == SUCCEEDED]
    newest = max(succeeded, key=_recency) if succeeded else None
    safety = [b for b in succeeded if b.backup_type == PRE_RESTORE]
    newest_safety = max(safety, key=_recency) if safety else None
    pre_restore_days = policy.pre_restore_retention_days
    pre_restore_days = policy.manual_retention_days if pre_restore_days is None else pre_restore_days
    horizons: dict[int, datetime.datetime] = {}
    for backup in succeeded:
        if backup.id in doomed:
            continue
        until = backup.created_at + day
        if backup.backup_type == AUTOMATIC:
            for kept, length in rules:
                if backup.id in kept:
                    until = max(until, backup.created_at + length)
        elif backup.backup_type == PRE_RESTORE:
            if backup is newest_safety or pre_restore_days is None:
                until = max(until, rolling)
            else:
                until = max(until, backup.created_at + (pre_restore_days + 1) * day)
        elif policy.manual_retention_days is None:
            until = max(until, rolling)
        else:
            until = max(until, backup.created_at + (policy.manual_retention_days + 1) * day)
        if backup is newest:
            until = max(until, rolling)
        horizons[backup.id] = until
    return horizons


def _expired_automatic(backups: Sequence[BackupInfo], policy: RetentionPolicy, zone: zoneinfo.ZoneInfo) -> set[int]:
    automatic = _automatic_successes(backups)
    kept = _gfs_keep(automatic, policy, zone)
    return {b.id for b in automatic if b.id not in kept}


def _expired_manual(backups: Sequence[BackupInfo], policy: RetentionPolicy, now: datetime.datetime) -> set[int]:
    if policy.manual_retention_days is None:
        return set()
    max_age = datetime.timedelta(days=policy.manual_retention_days)
    return {
        b.id for b in backups
        if b.status == SUCCEEDED and b.backup_type not in (AUTOMATIC, PRE_RESTORE) and now - b.created_at > max_age
    }


def _expired_pre_restore(backups: Sequence[BackupInfo], policy: RetentionPolicy, now: datetime.datetime) -> set[int]:
    days = policy.pre_restore_retention_days
    days = policy.manual_retention_days if days is None else days
    safety = [b for b in backups if b.status == SUCCEEDED and b.backup_type == PRE_RESTORE]
    if days is None or not safety:
        return set()
    newest = max(safety, key=_recency)
    max_age = datetime.timedelta(days=days)
    return {b.id for b in safety if b.id != newest.id and now - b.created_at > max_age}


def _expired_failures(backups: Sequence[BackupInfo], policy: RetentionPolicy, now: datetime.datetime) -> set[int]:
    max_age = datetime.timedelta(days=policy.keep_daily)
    return {b.id for b in backups if b.status == FAILED and now - b.created_at > max_age}


def _gfs_keep(automatic: list[BackupInfo], policy: RetentionPolicy, zone: zoneinfo.ZoneInfo) -> set[int]:
    def day(b: BackupInfo) -> datetime.date:
        return b.created_at.astimezone(zone).date()

    def iso_week(b: BackupInfo) -> tuple[int, int]:
        year, week, _ = day(b).isocalendar()
        return year, week

    def month(b: BackupInfo) -> tuple[int, int]:
        local = day(b)
        return local.year, local.month

    return (
        _newest_of_recent_periods(automatic, policy.keep_daily, day)
        | _newest_of_recent_periods(automatic, policy.keep_weekly, iso_week)
        | _newest_of_recent_periods(automatic, policy.keep_monthly, month)
    )


def _newest_of_recent_periods(
    backups: Iterable[BackupInfo], count: int, period: Callable[[BackupInfo], Hashable]
) -> set[int]:
    """Newest backup of each of the ``count`` most recent periods that have one."""
    kept: set[int] = set()
    seen: set[Hashable] = set()
    for backup in sorted(backups, key=_recency, reverse=True):
        key = period(backup)
        if key in seen:
            continue
        if len(seen) == count:
            break
        seen.add(key)
        kept.add(backup.id)
    return kept


def _automatic_successes(backups: Sequence[BackupInfo]) -> list[BackupInfo]:
    return [b for b in backups if b.status == SUCCEEDED and b.backup_type == AUTOMATIC]


def _recency(backup: BackupInfo) -> tuple[datetime.datetime, int]:
    return backup.created_at, backup.id


def _require_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, not {value!r}.")


def _require_aware(value: datetime.datetime, name: str) -> None:
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(f"{name} must be a timezone-aware datetime.")


def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError) as exc:
        raise ValueError(f"Unknown time zone {name!r}.") from exc
