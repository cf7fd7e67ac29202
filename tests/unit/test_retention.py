"""Tests for the pure retention policy in ``backups.core.retention``.

Expected kept sets are hand-written calendar dates for a fixed ``now``, not
the output of a second GFS implementation.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backups.core.retention import BackupInfo, RetentionPolicy, backups_to_delete, gfs_keep

UTC = dt.UTC
D = dt.date


def info(id: int, created_at: dt.datetime, status: str = "succeeded", backup_type: str = "automatic") -> BackupInfo:
    return BackupInfo(id=id, created_at=created_at, status=status, backup_type=backup_type)


def utc(year: int, month: int, day: int, hour: int = 2, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


def days(start: dt.date, end: dt.date) -> list[dt.date]:
    """Every date from ``start`` to ``end`` inclusive."""
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def daily_backups(dates: Iterable[dt.date], at: dt.time = dt.time(2, 0)) -> dict[dt.date, BackupInfo]:
    """One automatic success per date, its id the date's ordinal."""
    return {d: info(d.toordinal(), dt.datetime.combine(d, at, tzinfo=UTC)) for d in dates}


YEAR_2025 = days(D(2025, 1, 1), D(2025, 12, 31))
NOW_END_2025 = utc(2025, 12, 31, 12)

# Default policy (7 daily, 4 weekly, 12 monthly), one backup a day at 02:00 UTC.
KEPT_2025_UTC = {
    # daily: the 7 most recent days
    D(2025, 12, 25), D(2025, 12, 26), D(2025, 12, 27), D(2025, 12, 28),
    D(2025, 12, 29), D(2025, 12, 30), D(2025, 12, 31),
    # weekly: 2026-W01 -> Dec 31, 2025-W52 -> Dec 28 (both daily already), W51, W50
    D(2025, 12, 21), D(2025, 12, 14),
    # monthly: last day of each month (December's is daily already)
    D(2025, 1, 31), D(2025, 2, 28), D(2025, 3, 31), D(2025, 4, 30), D(2025, 5, 31), D(2025, 6, 30),
    D(2025, 7, 31), D(2025, 8, 31), D(2025, 9, 30), D(2025, 10, 31), D(2025, 11, 30),
}  # fmt: skip


def test_a_year_of_dailies_keeps_exactly_the_gfs_set() -> None:
    by_date = daily_backups(YEAR_2025)
    doomed = backups_to_delete(list(by_date.values()), RetentionPolicy(), now=NOW_END_2025)
    kept = {d for d, b in by_date.items() if b.id not in doomed}
    assert kept == KEPT_2025_UTC
    assert len(doomed) == 365 - 20


def test_a_year_of_dailies_in_tokyo_counts_local_dates() -> None:
    """Backups at 16:00 UTC are 01:00 the next day in Tokyo; periods follow the local date."""
    local_dates = days(D(2025, 1, 2), D(2026, 1, 1))
    backups = {
        d: info(d.toordinal(), dt.datetime.combine(d - dt.timedelta(days=1), dt.time(16), tzinfo=UTC))
        for d in local_dates
    }
    doomed = backups_to_delete(
        list(backups.values()), RetentionPolicy(), now=utc(2025, 12, 31, 18), timezone="Asia/Tokyo"
    )
    kept = {d for d, b in backups.items() if b.id not in doomed}
    assert kept == {
        # daily
        D(2025, 12, 26), D(2025, 12, 27), D(2025, 12, 28), D(2025, 12, 29),
        D(2025, 12, 30), D(2025, 12, 31), D(2026, 1, 1),
        # weekly: W01 -> Jan 1, W52 -> Dec 28, W51 -> Dec 21, W50 -> Dec 14
        D(2025, 12, 21), D(2025, 12, 14),
        # monthly: 2026-01 and 2025-12 are daily already, then Nov back to Feb
        D(2025, 2, 28), D(2025, 3, 31), D(2025, 4, 30), D(2025, 5, 31), D(2025, 6, 30),
        D(2025, 7, 31), D(2025, 8, 31), D(2025, 9, 30), D(2025, 10, 31), D(2025, 11, 30),
    }  # fmt: skip


def test_a_smaller_policy_on_the_same_year() -> None:
    by_date = daily_backups(YEAR_2025)
    policy = RetentionPolicy(keep_daily=2, keep_weekly=3, keep_monthly=2)
    doomed = backups_to_delete(list(by_date.values()), policy, now=NOW_END_2025)
    kept = {d for d, b in by_date.items() if b.id not in doomed}
    assert kept == {D(2025, 12, 31), D(2025, 12, 30), D(2025, 12, 28), D(2025, 12, 21), D(2025, 11, 30)}


def test_gaps_do_not_shorten_the_daily_history() -> None:
    """The last N days *that have a backup*, as restic/borg --keep-daily."""
    dates = [D(2026, 1, 2), D(2026, 1, 3), D(2026, 2, 20), D(2026, 4, 1), D(2026, 4, 2)]
    by_date = daily_backups(dates)
    policy = RetentionPolicy(keep_daily=4, keep_weekly=0, keep_monthly=0)
    doomed = backups_to_delete(list(by_date.values()), policy, now=utc(2026, 6, 1))
    assert doomed == {by_date[D(2026, 1, 2)].id}


def test_several_backups_a_day_keep_only_the_newest_of_each_day() -> None:
    backups = [
        info(day * 10 + slot, utc(2026, 3, day, hour)) for day in range(1, 11) for slot, hour in enumerate((1, 9, 17))
    ]
    policy = RetentionPolicy(keep_daily=7, keep_weekly=0, keep_monthly=0)
    doomed = backups_to_delete(backups, policy, now=utc(2026, 3, 10, 20))
    kept = {b.id for b in backups} - doomed
    assert kept == {42, 52, 62, 72, 82, 92, 102}


def test_same_timestamp_tie_is_broken_by_id() -> None:
    backups = [info(1, utc(2026, 3, 1)), info(2, utc(2026, 3, 1)), info(3, utc(2026, 2, 1))]
    policy = RetentionPolicy(keep_daily=1, keep_weekly=0, keep_monthly=0)
    assert backups_to_delete(backups, policy, now=utc(2026, 3, 2)) == {1, 3}


def test_fewer_backups_than_the_policy_keeps_them_all() -> None:
    backups = [info(1, utc(2026, 1, 1)), info(2, utc(2026, 2, 10)), info(3, utc(2026, 3, 3))]
    assert backups_to_delete(backups, RetentionPolicy(), now=utc(2026, 3, 4)) == set()


def test_empty_history_deletes_nothing() -> None:
    assert backups_to_delete([], RetentionPolicy(), now=utc(2026, 1, 1)) == set()


def test_newest_success_survives_an_all_zero_policy() -> None:
    backups = [info(i, utc(2026, 1, i)) for i in range(1, 6)]
    policy = RetentionPolicy(keep_daily=0, keep_weekly=0, keep_monthly=0)
    assert backups_to_delete(backups, policy, now=utc(2026, 1, 10)) == {1, 2, 3, 4}


def test_newest_success_may_be_manual_then_automatic_ones_all_go() -> None:
    backups = [info(i, utc(2026, 1, i)) for i in range(1, 4)] + [info(9, utc(2026, 1, 5), backup_type="manual")]
    policy = RetentionPolicy(keep_daily=0, keep_weekly=0, keep_monthly=0, manual_retention_days=0)
    assert backups_to_delete(backups, policy, now=utc(2026, 2, 1)) == {1, 2, 3}


def test_failing_tenant_deletes_nothing() -> None:
    backups = list(daily_backups(YEAR_2025).values()) + [
        info(1, utc(2025, 12, 31, 23), status="failed"),
        info(2, utc(2025, 6, 1), status="failed"),
        info(3, utc(2026, 1, 1, 1), status="queued"),
        info(4, utc(2025, 1, 1), status="succeeded", backup_type="manual"),
    ]
    policy = RetentionPolicy(keep_daily=1, keep_weekly=0, keep_monthly=0, manual_retention_days=1)
    assert backups_to_delete(backups, policy, now=utc(2026, 1, 1, 2)) == set()


def test_failed_manual_backup_also_stops_deletion() -> None:
    backups = [info(1, utc(2025, 1, 1)), info(2, utc(2025, 2, 1)), info(3, utc(2025, 3, 1), "failed", "manual")]
    policy = RetentionPolicy(keep_daily=0, keep_weekly=0, keep_monthly=0)
    assert backups_to_delete(backups, policy, now=utc(2025, 4, 1)) == set()


def test_recovered_tenant_deletes_again() -> None:
    backups = [info(1, utc(2025, 1, 1)), info(2, utc(2025, 2, 1)), info(3, utc(2025, 3, 1), "failed")]
    policy = RetentionPolicy(keep_daily=0, keep_weekly=0, keep_monthly=0)
    assert backups_to_delete(backups + [info(4, utc(2025, 3, 2))], policy, now=utc(2025, 3, 3)) == {1, 2, 3}


def test_failed_records_go_once_older_than_keep_daily_days() -> None:
    now = utc(2026, 3, 20, 12)
    backups = [
        info(1, now - dt.timedelta(days=7, seconds=1), status="failed"),
        info(2, now - dt.timedelta(days=7), status="failed"),
        info(3, now - dt.timedelta(days=2), status="failed", backup_type="manual"),
        info(4, now - dt.timedelta(days=30), status="failed", backup_type="manual"),
        info(5, now - dt.timedelta(hours=1)),
    ]
    assert backups_to_delete(backups, RetentionPolicy(keep_daily=7), now=now) == {1, 4}


def test_manual_backups_are_kept_forever_by_default() -> None:
    backups = [
        info(1, utc(2016, 1, 1), backup_type="manual"),
        info(2, utc(2020, 1, 1), backup_type="pre_restore"),
        info(3, utc(2026, 1, 1)),
    ]
    policy = RetentionPolicy(keep_daily=1, keep_weekly=0, keep_monthly=0)
    assert backups_to_delete(backups, policy, now=utc(2026, 1, 2)) == set()


def test_manual_backups_expire_after_manual_retention_days() -> None:
    now = utc(2026, 6, 1, 12)
    backups = [
        info(1, now - dt.timedelta(days=31), backup_type="manual"),
        info(2, now - dt.timedelta(days=30), backup_type="manual"),
        info(3, now - dt.timedelta(days=29), backup_type="manual"),
        info(4, now - dt.timedelta(days=40), backup_type="pre_restore"),
        info(5, now - dt.timedelta(days=30, microseconds=1), backup_type="manual"),
        info(6, now - dt.timedelta(days=1)),
        info(7, now - dt.timedelta(days=35), backup_type="pre_restore"),  # the newest safety backup: kept
    ]
    policy = RetentionPolicy(manual_retention_days=30)
    assert backups_to_delete(backups, policy, now=now) == {1, 4, 5}


def test_safety_backups_expire_after_their_own_days_but_never_the_newest() -> None:
    now = utc(2026, 6, 1, 12)
    backups = [
        info(1, now - dt.timedelta(days=20), backup_type="pre_restore"),
        info(2, now - dt.timedelta(days=16), backup_type="pre_restore"),
        info(3, now - dt.timedelta(days=15), backup_type="pre_restore"),  # the newest: kept whatever its age
        info(4, now - dt.timedelta(days=40), backup_type="manual"),  # manual backups keep their own rule
        info(5, now - dt.timedelta(days=1)),
        info(6, now - dt.timedelta(days=30), status="queued", backup_type="pre_restore"),
    ]
    assert backups_to_delete(backups, RetentionPolicy(pre_restore_retention_days=14), now=now) == {1, 2}
    assert backups_to_delete(backups, RetentionPolicy(pre_restore_retention_days=18), now=now) == {1}
    assert backups_to_delete(backups, RetentionPolicy(), now=now) == set()
    with pytest.raises(ValueError, match="pre_restore_retention_days"):
        RetentionPolicy(pre_restore_retention_days=-1)


def test_an_old_manual_backup_that_is_the_newest_success_survives() -> None:
    backups = [info(1, utc(2025, 1, 1), backup_type="manual"), info(2, utc(2025, 6, 1), status="queued")]
    policy = RetentionPolicy(manual_retention_days=1)
    assert backups_to_delete(backups, policy, now=utc(2026, 1, 1)) == set()


def test_queued_running_and_unknown_statuses_are_never_deleted() -> None:
    backups = [
        info(1, utc(2024, 1, 1), status="queued"),
        info(2, utc(2024, 1, 2), status="running"),
        info(3, utc(2024, 1, 3), status="cancelled"),
        info(4, utc(2024, 1, 4), status="queued", backup_type="manual"),
        info(5, utc(2025, 1, 1)),
        info(6, utc(2026, 1, 1)),
    ]
    policy = RetentionPolicy(keep_daily=0, keep_weekly=0, keep_monthly=0, manual_retention_days=0)
    assert backups_to_delete(backups, policy, now=utc(2026, 2, 1)) == {5}


def test_day_boundary_follows_the_tenant_timezone() -> None:
    """23:30 UTC on the 10th is 08:30 on the 11th in Tokyo: same day as the 11th's backup there."""
    backups = [info(1, utc(2026, 1, 9, 12)), info(2, utc(2026, 1, 10, 23, 30)), info(3, utc(2026, 1, 11, 10))]
    policy = RetentionPolicy(keep_daily=2, keep_weekly=0, keep_monthly=0)
    now = utc(2026, 1, 11, 12)
    assert backups_to_delete(backups, policy, now=now) == {1}
    assert backups_to_delete(backups, policy, now=now, timezone="Asia/Tokyo") == {2}


def test_iso_week_boundary_spans_the_new_year() -> None:
    """Mon 2025-12-29 .. Sun 2026-01-04 is one ISO week (2026-W01)."""
    by_date = daily_backups([D(2025, 12, 28), D(2025, 12, 29), D(2026, 1, 1), D(2026, 1, 4), D(2026, 1, 5)])
    policy = RetentionPolicy(keep_daily=0, keep_weekly=3, keep_monthly=0)
    kept = {
        d
        for d, b in by_date.items()
        if b.id not in backups_to_delete(list(by_date.values()), policy, now=utc(2026, 1, 6))
    }
    assert kept == {D(2026, 1, 5), D(2026, 1, 4), D(2025, 12, 28)}


def test_gfs_keep_lists_the_kept_automatic_successes() -> None:
    backups = [info(1, utc(2026, 1, 1)), info(2, utc(2026, 1, 1, 5)), info(3, utc(2026, 1, 2), backup_type="manual")]
    assert gfs_keep(backups, RetentionPolicy(keep_daily=5, keep_weekly=0, keep_monthly=0)) == {2}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"keep_daily": -1},
        {"keep_weekly": -2},
        {"keep_monthly": 1.5},
        {"keep_daily": True},
        {"manual_retention_days": -1},
    ],
)
def test_policy_refuses_bad_counts(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RetentionPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("backups", "now", "tz"),
    [
        ([info(1, dt.datetime(2026, 1, 1))], utc(2026, 1, 2), "UTC"),
        ([info(1, utc(2026, 1, 1))], dt.datetime(2026, 1, 2), "UTC"),
        ([info(1, utc(2026, 1, 1))], utc(2026, 1, 2), "Mars/Olympus_Mons"),
    ],
    ids=["naive-created-at", "naive-now", "unknown-zone"],
)
def test_bad_inputs_are_refused(backups: list[BackupInfo], now: dt.datetime, tz: str) -> None:
    with pytest.raises(ValueError):
        backups_to_delete(backups, RetentionPolicy(), now=now, timezone=tz)


BASE = utc(2025, 1, 1, 0)
ZONES = ["UTC", "Asia/Tokyo", "America/New_York", "Asia/Kolkata", "Pacific/Chatham"]


@st.composite
def histories(draw: st.DrawFn) -> list[BackupInfo]:
    rows = draw(
        st.lists(
            st.tuples(
                st.integers(min_value=0, max_value=400 * 24 * 4),
                st.sampled_from(["succeeded"] * 4 + ["failed", "queued", "running"]),
                st.sampled_from(["automatic"] * 3 + ["manual", "pre_restore"]),
            ),
            max_size=40,
        )
    )
    return [info(i, BASE + dt.timedelta(minutes=15 * q), status, kind) for i, (q, status, kind) in enumerate(rows)]


policies = st.builds(
    RetentionPolicy,
    keep_daily=st.integers(min_value=0, max_value=10),
    keep_weekly=st.integers(min_value=0, max_value=6),
    keep_monthly=st.integers(min_value=0, max_value=14),
    manual_retention_days=st.none() | st.integers(min_value=0, max_value=90),
    pre_restore_retention_days=st.none() | st.integers(min_value=0, max_value=30),
)
nows = st.integers(min_value=0, max_value=420 * 24).map(lambda h: BASE + dt.timedelta(hours=h))


def _newest(backups: Iterable[BackupInfo]) -> BackupInfo | None:
    return max(backups, key=lambda b: (b.created_at, b.id), default=None)


def _newest_of_last_days(backups: list[BackupInfo], count: int, zone: str) -> set[int]:
    tz = zoneinfo.ZoneInfo(zone)
    by_day: dict[dt.date, list[BackupInfo]] = {}
    for b in backups:
        if b.status == "succeeded" and b.backup_type == "automatic":
            by_day.setdefault(b.created_at.astimezone(tz).date(), []).append(b)
    recent_days = sorted(by_day, reverse=True)[:count]
    return {_newest(by_day[d]).id for d in recent_days}  # type: ignore[union-attr]


@settings(max_examples=75, deadline=None)
@given(backups=histories(), policy=policies, now=nows, zone=st.sampled_from(ZONES))
def test_property_safety_rules(backups: list[BackupInfo], policy: RetentionPolicy, now: dt.datetime, zone: str) -> None:
    doomed = backups_to_delete(backups, policy, now=now, timezone=zone)
    by_id = {b.id: b for b in backups}
    assert doomed <= set(by_id)
    assert all(by_id[i].status in ("succeeded", "failed") for i in doomed)
    newest_success = _newest(b for b in backups if b.status == "succeeded")
    if newest_success is not None:
        assert newest_success.id not in doomed
    newest_finished = _newest(b for b in backups if b.status in ("succeeded", "failed"))
    if newest_finished is not None and newest_finished.status == "failed":
        assert doomed == set()
    newest_safety = _newest(b for b in backups if b.status == "succeeded" and b.backup_type == "pre_restore")
    if newest_safety is not None:
        assert newest_safety.id not in doomed
    assert not doomed & _newest_of_last_days(backups, policy.keep_daily, zone)
    if policy.manual_retention_days is None:  # manual backups are kept; safety backups follow their own days
        deletable = ("automatic",) if policy.pre_restore_retention_days is None else ("automatic", "pre_restore")
        assert all(by_id[i].backup_type in deletable or by_id[i].status == "failed" for i in doomed)


@settings(max_examples=40, deadline=None)
@given(
    backups=histories(), policy=policies, now=nows, field=st.sampled_from(["keep_daily", "keep_weekly", "keep_monthly"])
)
def test_property_keeping_more_never_deletes_more(
    backups: list[BackupInfo], policy: RetentionPolicy, now: dt.datetime, field: str
) -> None:
    bigger = RetentionPolicy(**{**policy.__dict__, field: getattr(policy, field) + 1})
    assert backups_to_delete(backups, bigger, now=now) <= backups_to_delete(backups, policy, now=now)
