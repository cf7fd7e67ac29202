"""backups.core.retention.lock_horizons: until when each kept backup stays locked (S3 Object Lock), by the rule
that keeps it; what the policy deletes gets no lock renewal."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from backups.core.retention import BackupInfo, RetentionPolicy, backups_to_delete, lock_horizons

UTC = dt.UTC
DAY = dt.timedelta(days=1)
NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def info(id: int, created_at: dt.datetime, backup_type: str = "automatic", status: str = "succeeded") -> BackupInfo:
    return BackupInfo(id=id, created_at=created_at, status=status, backup_type=backup_type)


def test_each_keeper_is_locked_for_the_rule_that_keeps_it() -> None:
    policy = RetentionPolicy(keep_daily=7, keep_weekly=4, keep_monthly=12)
    dailies = [info(i, NOW - i * DAY) for i in range(1, 120)]
    horizons = lock_horizons(dailies, policy, now=NOW, rolling_days=7)
    doomed = backups_to_delete(dailies, policy, now=NOW)
    assert set(horizons) == {b.id for b in dailies} - doomed
    yesterday = dailies[0]
    assert horizons[yesterday.id] == yesterday.created_at + 13 * 31 * DAY  # December's newest: a monthly keeper
    three_days = dailies[2]  # 2026-12-04, a Friday: a daily keeper only (the week's newest is the 6th)
    assert horizons[three_days.id] == three_days.created_at + 8 * DAY
    month_end = next(b for b in dailies if b.created_at.date() == dt.date(2026, 10, 31))  # October's newest
    assert horizons[month_end.id] == month_end.created_at + 13 * 31 * DAY


def test_manual_and_safety_backups() -> None:
    backups = [info(1, NOW - 40 * DAY, "manual"), info(2, NOW - 2 * DAY, "manual"),
               info(3, NOW - 30 * DAY, "pre_restore"), info(4, NOW - 3 * DAY, "pre_restore"),
               info(5, NOW - DAY)]
    endless = lock_horizons(backups, RetentionPolicy(), now=NOW, rolling_days=2)
    assert endless[1] == endless[2] == NOW + 2 * DAY  # kept until deleted by hand: rolling
    limited = lock_horizons(backups, RetentionPolicy(manual_retention_days=30, pre_restore_retention_days=14),
                            now=NOW, rolling_days=2)
    assert 1 not in limited and 3 not in limited  # past their days: deleted, nothing to renew
    assert limited[2] == backups[1].created_at + 31 * DAY
    assert limited[4] == NOW + 2 * DAY  # the newest safety backup is kept whatever its age


def test_nothing_is_deleted_while_failing_so_every_success_keeps_a_lock() -> None:
    backups = [info(1, NOW - 50 * DAY), info(2, NOW - 49 * DAY), info(3, NOW - DAY, status="failed")]
    assert set(lock_horizons(backups, RetentionPolicy(keep_daily=1, keep_weekly=0, keep_monthly=0), now=NOW)) == {1, 2}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.sampled_from(["automatic", "manual", "pre_restore"])), max_size=60),
       st.integers(0, 10), st.integers(0, 6), st.integers(0, 14))
def test_a_lock_never_ends_before_the_backup_could_leave_by_its_rule(entries, daily, weekly, monthly) -> None:
    backups = [info(i, NOW - age * DAY - i * dt.timedelta(minutes=1), kind) for i, (age, kind) in enumerate(entries)]
    policy = RetentionPolicy(keep_daily=daily, keep_weekly=weekly, keep_monthly=monthly)
    horizons = lock_horizons(backups, policy, now=NOW, rolling_days=3)
    assert set(horizons) == {b.id for b in backups} - backups_to_delete(backups, policy, now=NOW)
    for backup in backups:
        if backup.id in horizons:
            assert horizons[backup.id] >= backup.created_at + DAY
