"""Exhaustive tests for the pure schedule calculator in ``backups.core.timetable``.

Expected instants are written by hand with the local offset spelled out, so
each row can be checked against a calendar without trusting the code.
"""

from __future__ import annotations

import collections
import datetime as dt
import zoneinfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backups.core.timetable import (
    DAILY,
    DISABLED,
    EVERY_6H,
    EVERY_12H,
    MONTHLY,
    SCHEDULE_CHOICES,
    SCHEDULED,
    WEEKLY,
    ScheduleSpec,
    next_run_after,
    next_runs_after,
    slot_offset_seconds,
    validate_schedule,
)

UTC = dt.UTC
NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
RECURRING = (DAILY, EVERY_12H, EVERY_6H, WEEKLY, MONTHLY)
MAD, NYC, SCL, SYD = "Europe/Madrid", "America/New_York", "America/Santiago", "Australia/Sydney"
NUUK, KOL, TYO = "America/Nuuk", "Asia/Kolkata", "Asia/Tokyo"


def at(text: str) -> dt.datetime:
    """Parse an ISO datetime that must carry its offset."""
    value = dt.datetime.fromisoformat(text)
    assert value.tzinfo is not None, text
    return value


def spec(
    schedule: str = DAILY,
    time: str | None = "02:30",
    tz: str = "UTC",
    weekday: int | None = None,
    day: int | None = None,
    scheduled_at: dt.datetime | None = None,
) -> ScheduleSpec:
    return ScheduleSpec(
        schedule=schedule,
        backup_time=dt.time.fromisoformat(time) if time is not None else None,
        weekday=weekday,
        day_of_month=day,
        timezone=tz,
        scheduled_at=scheduled_at,
    )


def walk(s: ScheduleSpec, after: dt.datetime, count: int) -> list[dt.datetime]:
    runs = []
    for _ in range(count):
        after = next_run_after(s, after)
        assert after is not None
        runs.append(after)
    return runs


NEXT_RUN_TABLE = [
    # daily, UTC
    ("daily-before-slot", spec(), "2026-01-10T01:00Z", "2026-01-10T02:30Z"),
    ("daily-1us-before-slot", spec(), "2026-01-10T02:29:59.999999Z", "2026-01-10T02:30Z"),
    ("daily-exactly-slot", spec(), "2026-01-10T02:30Z", "2026-01-11T02:30Z"),
    ("daily-after-slot", spec(), "2026-01-10T12:00Z", "2026-01-11T02:30Z"),
    ("daily-midnight", spec(time="00:00"), "2026-01-10T00:00Z", "2026-01-11T00:00Z"),
    ("daily-year-wrap", spec(), "2026-12-31T03:00Z", "2027-01-01T02:30Z"),
    ("daily-late-year-wrap", spec(time="23:30"), "2026-12-31T23:30Z", "2027-01-01T23:30Z"),
    ("daily-feb-non-leap", spec(), "2026-02-28T03:00Z", "2026-03-01T02:30Z"),
    ("daily-feb-28-leap", spec(), "2028-02-28T03:00Z", "2028-02-29T02:30Z"),
    ("daily-feb-29-leap", spec(), "2028-02-29T03:00Z", "2028-03-01T02:30Z"),
    ("daily-after-given-in-other-zone", spec(), "2026-01-10T03:00+05:00", "2026-01-10T02:30Z"),
    ("daily-seconds-kept", spec(time="02:30:15"), "2026-01-10T02:30Z", "2026-01-10T02:30:15Z"),
    # every_12h, UTC: a 15:00 base runs at 03:00 and 15:00
    ("12h-first-slot", spec(EVERY_12H, "15:00"), "2026-01-10T00:00Z", "2026-01-10T03:00Z"),
    ("12h-exactly-first", spec(EVERY_12H, "15:00"), "2026-01-10T03:00Z", "2026-01-10T15:00Z"),
    ("12h-exactly-second", spec(EVERY_12H, "15:00"), "2026-01-10T15:00Z", "2026-01-11T03:00Z"),
    ("12h-base-03-same-slots", spec(EVERY_12H, "03:00"), "2026-01-10T10:00Z", "2026-01-10T15:00Z"),
    ("12h-year-wrap", spec(EVERY_12H, "15:00"), "2026-12-31T15:00Z", "2027-01-01T03:00Z"),
    # every_6h, UTC: a 01:30 base runs at 01:30, 07:30, 13:30, 19:30
    ("6h-first", spec(EVERY_6H, "01:30"), "2026-01-10T00:00Z", "2026-01-10T01:30Z"),
    ("6h-exactly-first", spec(EVERY_6H, "01:30"), "2026-01-10T01:30Z", "2026-01-10T07:30Z"),
    ("6h-third", spec(EVERY_6H, "01:30"), "2026-01-10T08:00Z", "2026-01-10T13:30Z"),
    ("6h-exactly-third", spec(EVERY_6H, "01:30"), "2026-01-10T13:30Z", "2026-01-10T19:30Z"),
    ("6h-exactly-last", spec(EVERY_6H, "01:30"), "2026-01-10T19:30Z", "2026-01-11T01:30Z"),
    ("6h-base-1930-same-slots", spec(EVERY_6H, "19:30"), "2026-01-10T02:00Z", "2026-01-10T07:30Z"),
    ("6h-base-midnight", spec(EVERY_6H, "00:00"), "2026-01-10T18:00Z", "2026-01-11T00:00Z"),
    ("6h-year-wrap", spec(EVERY_6H, "01:30"), "2026-12-31T20:00Z", "2027-01-01T01:30Z"),
    # weekly, UTC (2026-01-05 is a Monday)
    ("weekly-later-same-day", spec(WEEKLY, weekday=0), "2026-01-05T01:00Z", "2026-01-05T02:30Z"),
    ("weekly-exactly-slot", spec(WEEKLY, weekday=0), "2026-01-05T02:30Z", "2026-01-12T02:30Z"),
    ("weekly-year-wrap", spec(WEEKLY, weekday=0), "2026-12-31T12:00Z", "2027-01-04T02:30Z"),
    ("weekly-sunday-wrap", spec(WEEKLY, weekday=6), "2026-12-27T03:00Z", "2027-01-03T02:30Z"),
    # monthly, UTC
    ("monthly-28-feb", spec(MONTHLY, day=28), "2026-02-27T12:00Z", "2026-02-28T02:30Z"),
    ("monthly-28-after-feb", spec(MONTHLY, day=28), "2026-02-28T02:30Z", "2026-03-28T02:30Z"),
    ("monthly-28-leap-feb", spec(MONTHLY, day=28), "2028-02-01T00:00Z", "2028-02-28T02:30Z"),
    ("monthly-28-leap-skips-29", spec(MONTHLY, day=28), "2028-02-28T02:30Z", "2028-03-28T02:30Z"),
    ("monthly-1-after-jan-31", spec(MONTHLY, day=1), "2026-01-31T12:00Z", "2026-02-01T02:30Z"),
    ("monthly-15-same-day", spec(MONTHLY, day=15), "2026-01-15T02:00Z", "2026-01-15T02:30Z"),
    ("monthly-15-next-month", spec(MONTHLY, day=15), "2026-01-15T03:00Z", "2026-02-15T02:30Z"),
    ("monthly-year-wrap", spec(MONTHLY, day=5), "2026-12-10T00:00Z", "2027-01-05T02:30Z"),
    ("monthly-28-december", spec(MONTHLY, day=28), "2026-12-28T02:30Z", "2027-01-28T02:30Z"),
    # Europe/Madrid: 2026-03-29 02:00 -> 03:00, 2026-10-25 03:00 -> 02:00
    ("madrid-day-before-spring", spec(tz=MAD), "2026-03-27T12:00+01:00", "2026-03-28T02:30+01:00"),
    ("madrid-gap-0230", spec(tz=MAD), "2026-03-28T12:00+01:00", "2026-03-29T03:30+02:00"),
    ("madrid-after-gap-slot", spec(tz=MAD), "2026-03-29T01:30Z", "2026-03-30T02:30+02:00"),
    ("madrid-gap-0200", spec(time="02:00", tz=MAD), "2026-03-29T00:00+01:00", "2026-03-29T03:00+02:00"),
    ("madrid-before-gap-0159", spec(time="01:59", tz=MAD), "2026-03-29T00:00+01:00", "2026-03-29T01:59+01:00"),
    ("madrid-after-gap-0300", spec(time="03:00", tz=MAD), "2026-03-29T00:00+01:00", "2026-03-29T03:00+02:00"),
    ("madrid-fold-first", spec(tz=MAD), "2026-10-24T12:00+02:00", "2026-10-25T02:30+02:00"),
    ("madrid-fold-no-second", spec(tz=MAD), "2026-10-25T02:30+02:00", "2026-10-26T02:30+01:00"),
    ("madrid-fold-between", spec(tz=MAD), "2026-10-25T02:00+01:00", "2026-10-26T02:30+01:00"),
    ("madrid-12h-gap", spec(EVERY_12H, tz=MAD), "2026-03-29T00:00Z", "2026-03-29T03:30+02:00"),
    ("madrid-12h-after-gap", spec(EVERY_12H, tz=MAD), "2026-03-29T03:30+02:00", "2026-03-29T14:30+02:00"),
    ("madrid-6h-fold", spec(EVERY_6H, tz=MAD), "2026-10-25T02:30+02:00", "2026-10-25T08:30+01:00"),
    ("madrid-weekly-gap", spec(WEEKLY, tz=MAD, weekday=6), "2026-03-22T12:00+01:00", "2026-03-29T03:30+02:00"),
    ("madrid-monthly-fold", spec(MONTHLY, tz=MAD, day=25), "2026-10-01T00:00Z", "2026-10-25T02:30+02:00"),
    # America/New_York: 2026-03-08 02:00 -> 03:00, 2026-11-01 02:00 -> 01:00
    ("ny-gap", spec(tz=NYC), "2026-03-07T12:00-05:00", "2026-03-08T03:30-04:00"),
    ("ny-after-gap", spec(tz=NYC), "2026-03-08T03:30-04:00", "2026-03-09T02:30-04:00"),
    ("ny-fold-first", spec(time="01:30", tz=NYC), "2026-10-31T12:00-04:00", "2026-11-01T01:30-04:00"),
    ("ny-fold-no-second", spec(time="01:30", tz=NYC), "2026-11-01T01:30-04:00", "2026-11-02T01:30-05:00"),
    ("ny-12h-fold", spec(EVERY_12H, "01:30", tz=NYC), "2026-11-01T01:30-04:00", "2026-11-01T13:30-05:00"),
    # America/Santiago: 2026-04-04 24:00 -> 23:00, 2026-09-06 00:00 -> 01:00
    ("santiago-fold-first", spec(time="23:30", tz=SCL), "2026-04-04T12:00-03:00", "2026-04-04T23:30-03:00"),
    ("santiago-fold-once", spec(time="23:30", tz=SCL), "2026-04-04T23:30-03:00", "2026-04-05T23:30-04:00"),
    ("santiago-gap", spec(time="00:30", tz=SCL), "2026-09-05T12:00-04:00", "2026-09-06T01:30-03:00"),
    ("santiago-no-midnight", spec(time="00:00", tz=SCL), "2026-09-05T12:00-04:00", "2026-09-06T01:00-03:00"),
    # Australia/Sydney: 2026-04-05 03:00 -> 02:00, 2026-10-04 02:00 -> 03:00
    ("sydney-fold-first", spec(tz=SYD), "2026-04-04T12:00+11:00", "2026-04-05T02:30+11:00"),
    ("sydney-fold-no-second", spec(tz=SYD), "2026-04-05T02:30+11:00", "2026-04-06T02:30+10:00"),
    ("sydney-gap", spec(tz=SYD), "2026-10-03T12:00+10:00", "2026-10-04T03:30+11:00"),
    ("sydney-monthly-gap", spec(MONTHLY, tz=SYD, day=4), "2026-09-30T00:00Z", "2026-10-04T03:30+11:00"),
    # America/Nuuk: the gap straddles midnight (2026-03-28 23:00 -> 03-29 00:00)
    ("nuuk-gap-over-midnight", spec(time="23:30", tz=NUUK), "2026-03-28T12:00-02:00", "2026-03-29T00:30-01:00"),
    ("nuuk-yesterdays-slot", spec(time="23:30", tz=NUUK), "2026-03-29T00:10-01:00", "2026-03-29T00:30-01:00"),
    ("nuuk-after-gap", spec(time="23:30", tz=NUUK), "2026-03-29T00:30-01:00", "2026-03-29T23:30-01:00"),
    # Asia/Kolkata: +05:30, no DST
    ("kolkata-daily", spec(tz=KOL), "2026-01-10T00:00Z", "2026-01-11T02:30+05:30"),
    ("kolkata-monthly-day-before-utc", spec(MONTHLY, "02:00", tz=KOL, day=1), "2026-01-31T20:00Z", "2026-01-31T20:30Z"),
    ("kolkata-6h", spec(EVERY_6H, "00:15", tz=KOL), "2026-01-10T00:00Z", "2026-01-10T06:15+05:30"),
    # Asia/Tokyo: no DST
    ("tokyo-daily", spec(time="00:15", tz=TYO), "2026-06-30T16:00Z", "2026-07-02T00:15+09:00"),
    ("tokyo-weekly", spec(WEEKLY, "09:00", tz=TYO, weekday=0), "2026-01-04T23:59Z", "2026-01-05T00:00Z"),
]


@pytest.mark.parametrize(
    ("s", "after", "expected"),
    [pytest.param(s, after, expected, id=name) for name, s, after, expected in NEXT_RUN_TABLE],
)
def test_next_run_table(s: ScheduleSpec, after: str, expected: str) -> None:
    result = next_run_after(s, at(after))
    assert result == at(expected)
    assert result is not None and result.tzinfo is UTC


@pytest.mark.parametrize(
    ("weekday", "expected"),
    [
        (0, "2026-01-12T02:30Z"),
        (1, "2026-01-06T02:30Z"),
        (2, "2026-01-07T02:30Z"),
        (3, "2026-01-08T02:30Z"),
        (4, "2026-01-09T02:30Z"),
        (5, "2026-01-10T02:30Z"),
        (6, "2026-01-11T02:30Z"),
    ],
)
def test_weekly_on_every_weekday(weekday: int, expected: str) -> None:
    s = spec(WEEKLY, weekday=weekday)
    result = next_run_after(s, at("2026-01-05T12:00Z"))
    assert result == at(expected)
    assert result is not None and result.weekday() == weekday
    assert next_run_after(s, result) == result + dt.timedelta(days=7)


def test_disabled_never_runs() -> None:
    assert next_run_after(spec(DISABLED), at("2026-01-01T00:00Z")) is None
    assert next_run_after(spec(DISABLED, time=None, tz="Nowhere/Land"), NOW) is None


def test_scheduled_runs_once_then_never() -> None:
    s = spec(SCHEDULED, time=None, scheduled_at=at("2026-05-01T10:00+02:00"))
    first = next_run_after(s, at("2026-04-01T00:00Z"))
    assert first == at("2026-05-01T08:00Z")
    assert first is not None and first.tzinfo is UTC
    assert next_run_after(s, first) is None
    assert next_run_after(s, at("2026-06-01T00:00Z")) is None


def test_scheduled_without_datetime_has_nothing_to_run() -> None:
    assert next_run_after(spec(SCHEDULED, time=None), NOW) is None


def test_scheduled_naive_datetime_is_refused() -> None:
    s = spec(SCHEDULED, scheduled_at=dt.datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="scheduled_at"):
        next_run_after(s, NOW)


def test_naive_after_is_refused() -> None:
    with pytest.raises(ValueError, match="after"):
        next_run_after(spec(), dt.datetime(2026, 1, 1))


@pytest.mark.parametrize(
    "s",
    [
        spec("hourly"),
        spec(WEEKLY, weekday=7),
        spec(WEEKLY, weekday=None),
        spec(MONTHLY, day=29),
        spec(DAILY, time=None),
        spec(tz="Mars/Olympus_Mons"),
    ],
    ids=["unknown-schedule", "weekday-7", "no-weekday", "day-29", "no-time", "bad-zone"],
)
def test_invalid_spec_is_refused(s: ScheduleSpec) -> None:
    with pytest.raises(ValueError):
        next_run_after(s, NOW)


def _local_runs(s: ScheduleSpec, after: dt.datetime, count: int) -> list[dt.datetime]:
    zone = zoneinfo.ZoneInfo(s.timezone)
    return [run.astimezone(zone) for run in walk(s, after, count)]


def test_madrid_0230_daily_runs_once_per_local_day_through_spring_forward() -> None:
    runs = _local_runs(spec(tz="Europe/Madrid"), at("2026-03-22T00:00+01:00"), 14)
    expected_dates = [dt.date(2026, 3, 22) + dt.timedelta(days=i) for i in range(14)]
    assert [run.date() for run in runs] == expected_dates
    times = {run.date(): run.time() for run in runs}
    assert times.pop(dt.date(2026, 3, 29)) == dt.time(3, 30)
    assert set(times.values()) == {dt.time(2, 30)}
    assert runs[7].utcoffset() == dt.timedelta(hours=2)


def test_madrid_0230_daily_runs_once_per_local_day_through_fall_back() -> None:
    runs = _local_runs(spec(tz="Europe/Madrid"), at("2026-10-18T00:00+02:00"), 14)
    expected_dates = [dt.date(2026, 10, 18) + dt.timedelta(days=i) for i in range(14)]
    assert [run.date() for run in runs] == expected_dates
    assert {run.time() for run in runs} == {dt.time(2, 30)}
    fall_back_day = runs[7]
    assert fall_back_day.date() == dt.date(2026, 10, 25)
    assert fall_back_day.utcoffset() == dt.timedelta(hours=2)
    assert fall_back_day.fold == 0
    assert runs[8].utcoffset() == dt.timedelta(hours=1)


@pytest.mark.parametrize(
    ("tz", "start"),
    [
        ("Europe/Madrid", "2026-03-26T00:00Z"),
        ("Europe/Madrid", "2026-10-22T00:00Z"),
        ("America/New_York", "2026-03-05T12:00Z"),
        ("America/New_York", "2026-10-29T12:00Z"),
        ("America/Santiago", "2026-04-02T12:00Z"),
        ("America/Santiago", "2026-09-03T12:00Z"),
        ("Australia/Sydney", "2026-04-02T00:00Z"),
        ("Australia/Sydney", "2026-10-01T00:00Z"),
    ],
)
@pytest.mark.parametrize("base", ["00:30", "02:30", "23:30"])
def test_every_6h_has_four_runs_per_local_day_around_transitions(tz: str, start: str, base: str) -> None:
    zone = zoneinfo.ZoneInfo(tz)
    first_day = at(start).astimezone(zone).date() + dt.timedelta(days=1)
    runs = _local_runs(spec(EVERY_6H, base, tz=tz), dt.datetime.combine(first_day, dt.time(), tzinfo=zone), 24)
    utc_runs = [run.astimezone(UTC) for run in runs]
    assert utc_runs == sorted(set(utc_runs))
    per_day = collections.Counter(run.date() for run in runs)
    assert per_day == {first_day + dt.timedelta(days=i): 4 for i in range(6)}


def test_skipped_local_day_runs_once() -> None:
    """Pacific/Apia skipped 2011-12-30: its slot is the 31st's slot, run once."""
    runs = _local_runs(spec(tz="Pacific/Apia"), at("2011-12-28T13:00Z"), 4)
    assert [run.date() for run in runs] == [
        dt.date(2011, 12, 29),
        dt.date(2011, 12, 31),
        dt.date(2012, 1, 1),
        dt.date(2012, 1, 2),
    ]
    assert {run.time() for run in runs} == {dt.time(2, 30)}


VALID_SPECS = [
    spec(DISABLED, time=None),
    spec(DAILY),
    spec(EVERY_12H, "15:00"),
    spec(EVERY_6H, "01:30"),
    spec(WEEKLY, weekday=0),
    spec(WEEKLY, weekday=6),
    spec(MONTHLY, day=1),
    spec(MONTHLY, day=28),
    spec(MONTHLY, day=28, weekday=99),
    spec(SCHEDULED, time=None, scheduled_at=NOW + dt.timedelta(seconds=1)),
    spec(DAILY, tz="Asia/Kolkata"),
    spec(DAILY, tz="America/Santiago"),
]


@pytest.mark.parametrize("s", VALID_SPECS, ids=lambda s: f"{s.schedule}-{s.timezone}")
def test_valid_specs_have_no_errors(s: ScheduleSpec) -> None:
    assert validate_schedule(s, now=NOW) == {}


def test_every_choice_has_a_valid_example() -> None:
    assert {s.schedule for s in VALID_SPECS} == {value for value, _ in SCHEDULE_CHOICES}
    assert len({label for _, label in SCHEDULE_CHOICES}) == len(SCHEDULE_CHOICES)


INVALID_TABLE = [
    ("unknown-schedule", spec("hourly"), {"backup_schedule"}),
    ("unknown-schedule-and-zone", spec("", tz="Nowhere"), {"backup_schedule", "backup_timezone"}),
    ("weekly-weekday-7", spec(WEEKLY, weekday=7), {"backup_weekday"}),
    ("weekly-weekday-negative", spec(WEEKLY, weekday=-1), {"backup_weekday"}),
    ("weekly-weekday-bool", spec(WEEKLY, weekday=True), {"backup_weekday"}),
    ("weekly-no-weekday", spec(WEEKLY), {"backup_weekday"}),
    ("monthly-day-0", spec(MONTHLY, day=0), {"backup_day_of_month"}),
    ("monthly-day-29", spec(MONTHLY, day=29), {"backup_day_of_month"}),
    ("monthly-day-31", spec(MONTHLY, day=31), {"backup_day_of_month"}),
    ("monthly-no-day", spec(MONTHLY), {"backup_day_of_month"}),
    ("daily-no-time", spec(DAILY, time=None), {"backup_time"}),
    ("12h-no-time", spec(EVERY_12H, time=None), {"backup_time"}),
    ("6h-no-time", spec(EVERY_6H, time=None), {"backup_time"}),
    ("weekly-no-time", spec(WEEKLY, time=None, weekday=1), {"backup_time"}),
    ("monthly-no-time", spec(MONTHLY, time=None, day=1), {"backup_time"}),
    ("weekly-all-missing", spec(WEEKLY, time=None, tz="x"), {"backup_time", "backup_weekday", "backup_timezone"}),
    ("scheduled-missing", spec(SCHEDULED, time=None), {"next_scheduled_backup"}),
    ("scheduled-past", spec(SCHEDULED, scheduled_at=NOW - dt.timedelta(days=1)), {"next_scheduled_backup"}),
    ("scheduled-now", spec(SCHEDULED, scheduled_at=NOW), {"next_scheduled_backup"}),
    ("scheduled-naive", spec(SCHEDULED, scheduled_at=dt.datetime(2030, 1, 1)), {"next_scheduled_backup"}),
    ("scheduled-bad-zone", spec(SCHEDULED, tz="UTC+2", scheduled_at=NOW + dt.timedelta(days=1)), {"backup_timezone"}),
    ("zone-unknown", spec(tz="Europe/Atlantis"), {"backup_timezone"}),
    ("zone-empty", spec(tz=""), {"backup_timezone"}),
    ("zone-wrong-case", spec(tz="europe/madrid"), {"backup_timezone"}),
    ("zone-path", spec(tz="../etc/passwd"), {"backup_timezone"}),
    ("zone-server-local", spec(tz="localtime"), {"backup_timezone"}),
    ("zone-disabled", spec(DISABLED, tz="Not/AZone"), {"backup_timezone"}),
]


@pytest.mark.parametrize(
    ("s", "fields"),
    [pytest.param(s, fields, id=name) for name, s, fields in INVALID_TABLE],
)
def test_validation_errors(s: ScheduleSpec, fields: set[str]) -> None:
    errors = validate_schedule(s, now=NOW)
    assert set(errors) == fields
    for message in errors.values():
        assert message[0].isupper() and message.endswith(".")
        assert ". " not in message and "\n" not in message


def test_validation_messages_tell_missing_from_out_of_range() -> None:
    missing = validate_schedule(spec(MONTHLY), now=NOW)["backup_day_of_month"]
    out_of_range = validate_schedule(spec(MONTHLY, day=31), now=NOW)["backup_day_of_month"]
    assert missing != out_of_range
    assert "28" in out_of_range
    past = validate_schedule(spec(SCHEDULED, scheduled_at=NOW), now=NOW)["next_scheduled_backup"]
    assert "future" in past


def test_validation_needs_an_aware_now() -> None:
    with pytest.raises(ValueError):
        validate_schedule(spec(), now=dt.datetime(2026, 1, 1))


def test_slot_offset_is_pinned_across_runs() -> None:
    """Pinned values: built-in hash() is salted per process and would fail here."""
    assert slot_offset_seconds("tenant-a", 3600) == 3294
    assert slot_offset_seconds("tenant-b", 3600) == 2618
    assert slot_offset_seconds("", 900) == 754


def test_slot_offset_spreads_tenants() -> None:
    offsets = collections.Counter(slot_offset_seconds(f"tenant-{i}", 10) for i in range(1000))
    assert set(offsets) == set(range(10))
    assert max(offsets.values()) < 150


@pytest.mark.parametrize("window", [0, -5, True])
def test_slot_offset_needs_a_positive_window(window: int) -> None:
    with pytest.raises(ValueError):
        slot_offset_seconds("tenant", window)


@given(key=st.text(), window=st.integers(min_value=1, max_value=10**9))
def test_slot_offset_in_range_and_deterministic(key: str, window: int) -> None:
    offset = slot_offset_seconds(key, window)
    assert 0 <= offset < window
    assert slot_offset_seconds(key, window) == offset


ALL_ZONES = sorted(zoneinfo.available_timezones() - {"localtime", "posixrules", "Factory"})
# Zones whose transitions never move a daily slot off its local date (2000-2037).
REGULAR_ZONES = [
    "UTC",
    "Europe/Madrid",
    "Europe/London",
    "Europe/Dublin",
    "America/New_York",
    "America/Santiago",
    "America/St_Johns",
    "America/Havana",
    "America/Sao_Paulo",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Tokyo",
    "Asia/Tehran",
    "Pacific/Chatham",
    "Africa/Casablanca",
    "Antarctica/Troll",
]
_PERIOD = {DAILY: dt.timedelta(days=1), WEEKLY: dt.timedelta(days=7)}


def _slot_instants_in(s: ScheduleSpec, start: dt.datetime, end: dt.datetime) -> set[dt.datetime]:
    """Brute-force reference: the fold=0 instants of every slot in ``(start, end]``."""
    zone = zoneinfo.ZoneInfo(s.timezone)
    assert s.backup_time is not None
    step = {EVERY_12H: 12, EVERY_6H: 6}.get(s.schedule, 24)
    base = dt.datetime.combine(dt.date(2000, 1, 1), s.backup_time)
    times = {(base + dt.timedelta(hours=step * k)).time() for k in range(24 // step)}
    day = start.astimezone(zone).date() - dt.timedelta(days=4)
    found = set()
    while day <= end.astimezone(zone).date() + dt.timedelta(days=4):
        if (s.schedule != WEEKLY or day.weekday() == s.weekday) and (
            s.schedule != MONTHLY or day.day == s.day_of_month
        ):
            for time in times:
                instant = dt.datetime.combine(day, time, tzinfo=zone).astimezone(UTC)
                if start < instant <= end:
                    found.add(instant)
        day += dt.timedelta(days=1)
    return found


recurring_specs = st.builds(
    ScheduleSpec,
    schedule=st.sampled_from(RECURRING),
    backup_time=st.times(),
    weekday=st.integers(min_value=0, max_value=6),
    day_of_month=st.integers(min_value=1, max_value=28),
    timezone=st.sampled_from(ALL_ZONES),
    scheduled_at=st.none(),
)
afters = st.datetimes(
    min_value=dt.datetime(2000, 1, 1),
    max_value=dt.datetime(2037, 1, 1),
    timezones=st.sampled_from([UTC, zoneinfo.ZoneInfo("Europe/Madrid"), zoneinfo.ZoneInfo("Asia/Kolkata")]),
)


@settings(max_examples=75, deadline=None)
@given(s=recurring_specs, after=afters)
def test_property_runs_are_later_utc_increasing_and_none_skipped(s: ScheduleSpec, after: dt.datetime) -> None:
    runs = walk(s, after, 6)
    assert all(run.tzinfo is UTC for run in runs)
    assert runs[0] > after
    assert all(a < b for a, b in zip(runs, runs[1:], strict=False))
    assert _slot_instants_in(s, after, runs[-1]) == set(runs)


@settings(max_examples=75, deadline=None)
@given(
    s=st.builds(
        ScheduleSpec,
        schedule=st.sampled_from([DAILY, WEEKLY, MONTHLY]),
        backup_time=st.times(),
        weekday=st.integers(min_value=0, max_value=6),
        day_of_month=st.integers(min_value=1, max_value=28),
        timezone=st.sampled_from(REGULAR_ZONES),
        scheduled_at=st.none(),
    ),
    after=afters,
)
def test_property_one_run_per_local_period(s: ScheduleSpec, after: dt.datetime) -> None:
    zone = zoneinfo.ZoneInfo(s.timezone)
    dates = [run.astimezone(zone).date() for run in walk(s, after, 10)]
    pairs = list(zip(dates, dates[1:], strict=False))
    if s.schedule == MONTHLY:
        assert {d.day for d in dates} == {s.day_of_month}
        assert all(_month_index(b) - _month_index(a) == 1 for a, b in pairs)
    else:
        assert all(b - a == _PERIOD[s.schedule] for a, b in pairs)
    if s.schedule == WEEKLY:
        assert {d.weekday() for d in dates} == {s.weekday}


def _month_index(day: dt.date) -> int:
    return day.year * 12 + day.month


@settings(max_examples=150, deadline=None)
@given(s=recurring_specs, after=afters, offsets=st.lists(st.integers(min_value=0, max_value=7 * 86_400), min_size=1,
                                                         max_size=40))
def test_property_many_instants_answer_as_one_each(s: ScheduleSpec, after: dt.datetime, offsets: list[int]) -> None:
    """The dispatcher's batch form gives every tenant (one schedule, its own spread offset) the scan's answer."""
    instants = [after - dt.timedelta(seconds=o) for o in offsets]
    assert next_runs_after(s, instants) == [next_run_after(s, i) for i in instants]


@pytest.mark.parametrize("tz", [MAD, NUUK, SCL, SYD, "Pacific/Apia"])
@pytest.mark.parametrize("schedule", RECURRING)
def test_many_instants_across_transitions(tz: str, schedule: str) -> None:
    """Every 7 minutes over the days around each year's transitions: the batch answers equal the scan's."""
    s = spec(schedule, "02:30", tz=tz, weekday=6, day=25)
    starts = [dt.datetime(2011, 12, 28, tzinfo=UTC), dt.datetime(2026, 3, 27, tzinfo=UTC),
              dt.datetime(2026, 10, 23, tzinfo=UTC), dt.datetime(2026, 4, 3, tzinfo=UTC)]
    instants = [start + dt.timedelta(minutes=7 * k) for start in starts for k in range(4 * 24 * 60 // 7)]
    assert next_runs_after(s, instants) == [next_run_after(s, i) for i in instants]


def test_many_instants_refuse_like_one() -> None:
    with pytest.raises(ValueError, match="weekday"):
        next_runs_after(spec(WEEKLY, "02:00"), [NOW, NOW + dt.timedelta(hours=1)])
    assert next_runs_after(spec(DISABLED), [NOW, NOW]) == [None, None]
    assert next_runs_after(spec(DAILY), []) == []
