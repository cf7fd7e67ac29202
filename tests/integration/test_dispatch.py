"""The dispatcher: each (tenant, slot) once, missed slots collapse, one-shots disable, unmigrated tenants wait."""

import threading
from datetime import datetime, time, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import DataError, connection, connections
from django.utils import timezone
from django_tenants.utils import get_tenant_model

from backups.core.timetable import next_run_after
from backups.models import BackupRecord
from backups.schedule.dispatch import dispatch_due_backups


def test_two_dispatchers_at_the_same_moment_create_each_slot_once(fake_tenants, settings):
    settings.BACKUPS_DISPATCH_BATCH = 40
    tenants = fake_tenants("race_", 200, due_at=timezone.now() - timedelta(minutes=1))
    barrier = threading.Barrier(2)
    created: list[list[int]] = [[], []]

    def run(i: int) -> None:
        try:
            barrier.wait()
            while True:
                result = dispatch_due_backups(enqueue=False)
                if not result.claimed:
                    break
                created[i].extend(r.pk for r in result.records)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert created[0] and created[1], "both dispatchers should have claimed some tenants"
    records = BackupRecord.objects.filter(tenant__in=tenants)
    assert records.count() == 200 == len(created[0]) + len(created[1])
    assert len({(r.tenant_id, r.slot) for r in records}) == 200
    now = timezone.now()
    assert not get_tenant_model().objects.filter(pk__in=[t.pk for t in tenants], next_backup_at__lte=now).exists()


def test_missed_slots_collapse_into_one_backup(fake_tenants):
    now = timezone.now()
    (tenant,) = fake_tenants("late_", 1, due_at=now - timedelta(hours=30))
    first = dispatch_due_backups(now=now, enqueue=False)
    assert [r.tenant_id for r in first.records] == [tenant.pk]
    assert first.records[0].slot == now - timedelta(hours=30)
    tenant.refresh_from_db()
    assert now < tenant.next_backup_at <= now + timedelta(days=1, minutes=30)
    assert dispatch_due_backups(now=now + timedelta(minutes=5), enqueue=False).records == []
    assert BackupRecord.objects.filter(tenant=tenant).count() == 1


def test_unmigrated_tenants_are_skipped_until_ready(fake_tenants):
    now = timezone.now()
    (tenant,) = fake_tenants("fresh_", 1, due_at=now - timedelta(minutes=1), migrated=False)
    result = dispatch_due_backups(now=now, enqueue=False)
    assert tenant.schema_name in result.skipped_unmigrated
    assert not BackupRecord.objects.filter(tenant=tenant).exists()
    with connection.cursor() as cur:
        cur.execute(f"CREATE TABLE {tenant.schema_name}.django_migrations (id int)")
    assert [r.tenant_id for r in dispatch_due_backups(now=now, enqueue=False).records] == [tenant.pk]


def test_scheduled_runs_once_and_disables_itself(fake_tenants):
    (tenant,) = fake_tenants("once_", 1, due_at=None)
    when = timezone.now() + timedelta(seconds=30)
    tenant.backup_schedule, tenant.next_scheduled_backup = "scheduled", when
    tenant.full_clean()
    tenant.save()
    assert tenant.next_backup_at == when
    assert dispatch_due_backups(now=when - timedelta(seconds=1), enqueue=False).records == []
    result = dispatch_due_backups(now=when + timedelta(seconds=1), enqueue=False)
    assert [r.tenant_id for r in result.records] == [tenant.pk]
    tenant.refresh_from_db()
    assert tenant.backup_schedule == "disabled" and tenant.next_backup_at is None
    assert dispatch_due_backups(now=when + timedelta(days=1), enqueue=False).records == []


def test_automatic_records_follow_the_naming_convention(fake_tenants):
    now = timezone.now()
    (tenant,) = fake_tenants("named_", 1, due_at=now.replace(microsecond=0) - timedelta(seconds=1))
    (record,) = dispatch_due_backups(now=now, enqueue=False).records
    assert record.backup_type == "automatic" and record.status == "queued"
    assert record.file_name == f"auto-sql-{tenant.schema_name}-{record.slot:%Y-%m-%d-%H%M%S}.sql.zst"


@pytest.mark.parametrize(("fields", "bad_field"), [
    ({"backup_schedule": "weekly", "backup_time": time(3), "backup_weekday": 7}, "backup_weekday"),
    ({"backup_schedule": "monthly", "backup_time": time(3), "backup_day_of_month": 29}, "backup_day_of_month"),
    ({"backup_schedule": "daily", "backup_time": None}, "backup_time"),
    ({"backup_schedule": "daily", "backup_time": time(3), "backup_timezone": "Mars/Olympus"}, "backup_timezone"),
    ({"backup_schedule": "scheduled", "next_scheduled_backup": timezone.now() - timedelta(hours=1)},
     "next_scheduled_backup"),
    ({"backup_schedule": "hourly"}, "backup_schedule"),
])
def test_invalid_schedules_are_refused_per_field(fields, bad_field):
    tenant = get_tenant_model().objects.get(schema_name="clinica_demo")
    for name, value in fields.items():
        setattr(tenant, name, value)
    with pytest.raises(ValidationError) as err:
        tenant.clean()
    assert bad_field in err.value.message_dict


def test_next_backup_at_follows_schedule_changes(settings):
    settings.BACKUPS_SPREAD_SECONDS = 0
    tenant = get_tenant_model().objects.get(schema_name="clinica_norte")
    try:
        tenant.backup_schedule, tenant.backup_time, tenant.backup_timezone = "daily", time(2, 30), "Europe/Madrid"
        tenant.save()
        expected = next_run_after(tenant.backup_schedule_spec, timezone.now())
        assert tenant.next_backup_at == expected
        tenant.backup_schedule, tenant.backup_weekday = "weekly", 6
        tenant.save(update_fields=["backup_schedule", "backup_weekday"])
        tenant.refresh_from_db()
        assert tenant.next_backup_at.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Madrid")).weekday() == 6
    finally:
        tenant.backup_schedule = "disabled"
        tenant.save()
    assert tenant.next_backup_at is None


def test_spread_offsets_are_stable_and_inside_the_window(settings, fake_tenants):
    settings.BACKUPS_SPREAD_SECONDS = 1800
    tenants = fake_tenants("spread_", 50, due_at=None)
    offsets = set()
    for t in tenants:
        t.save()
        nominal = next_run_after(t.backup_schedule_spec, t.next_backup_at - timedelta(seconds=1800))
        delta = (t.next_backup_at - nominal).total_seconds()
        assert 0 <= delta < 1800
        offsets.add(delta)
        again = get_tenant_model().objects.get(pk=t.pk)
        again.save()
        assert again.next_backup_at == t.next_backup_at
    assert len(offsets) > 25  # spread out, not bunched


def test_setup_backup_schedule_installs_the_beat_entries(settings):
    from django_celery_beat.models import PeriodicTask

    settings.BACKUPS_TICK_SECONDS = 120
    call_command("setup_backup_schedule", stdout=__import__("io").StringIO())
    call_command("setup_backup_schedule", stdout=__import__("io").StringIO())  # idempotent
    tick = PeriodicTask.objects.get(task="tasks.backups.dispatch_due_backups")
    assert tick.interval.every == 120 and tick.expire_seconds == 120 and tick.expires is None
    assert tick.queue == "backups.dispatch" and tick.enabled
    assert PeriodicTask.objects.filter(task="tasks.backups.reap_stuck_backups").count() == 1


def test_setup_backup_schedule_turns_an_entry_off_with_zero(settings):
    from django_celery_beat.models import PeriodicTask

    settings.BACKUPS_DRILL_SECONDS = 0
    call_command("setup_backup_schedule", stdout=__import__("io").StringIO())
    assert not PeriodicTask.objects.get(task="tasks.backups.schedule_verify_drills").enabled
    settings.BACKUPS_DRILL_SECONDS = 3600
    call_command("setup_backup_schedule", stdout=__import__("io").StringIO())
    drill = PeriodicTask.objects.get(task="tasks.backups.schedule_verify_drills")
    assert drill.enabled and drill.interval.every == 3600 and drill.queue == "backups.housekeeping"
    assert PeriodicTask.objects.get(task="tasks.backups.check_overdue_backups").enabled


def test_two_slots_of_one_tenant_in_the_same_second_get_distinct_keys(fake_tenants):
    now = timezone.now().replace(microsecond=100_000)
    first, other = fake_tenants("samesec_", 2, due_at=now - timedelta(minutes=1))
    earlier = dispatch_due_backups(now=now, enqueue=False).records
    (mine,) = [r for r in earlier if r.tenant_id == first.pk]
    # the schedule is edited and due again within the same second as the slot just recorded
    get_tenant_model().objects.filter(pk=first.pk).update(next_backup_at=mine.slot + timedelta(microseconds=500_000))
    get_tenant_model().objects.filter(pk=other.pk).update(next_backup_at=now - timedelta(seconds=5))
    records = {r.tenant_id: r for r in dispatch_due_backups(now=now + timedelta(seconds=1), enqueue=False).records}
    assert set(records) >= {first.pk, other.pk}, "one tenant's collision must not fail the tick for the others"
    again = records[first.pk]
    assert again.storage_key != mine.storage_key
    assert again.file_name == mine.file_name.replace(".sql", "-2.sql", 1)


def test_a_tenant_with_a_broken_schedule_does_not_stop_the_tick(fake_tenants):
    now = timezone.now()
    bad, good = fake_tenants("broken_", 2, due_at=now - timedelta(minutes=1))
    get_tenant_model().objects.filter(pk=bad.pk).update(backup_timezone="Mars/Olympus_Mons")  # behind validation
    result = dispatch_due_backups(now=now, enqueue=False)
    assert [r.tenant_id for r in result.records if r.tenant_id in (bad.pk, good.pk)] == [good.pk]
    assert "valid IANA time zone" in result.broken[bad.schema_name]
    bad.refresh_from_db()
    good.refresh_from_db()
    assert bad.next_backup_at == now - timedelta(minutes=1)  # still due: the overdue check will name it
    assert good.next_backup_at > now


def test_a_slot_already_recorded_is_only_advanced(fake_tenants):
    now = timezone.now()
    recorded, fresh = fake_tenants("taken_", 2, due_at=now - timedelta(minutes=1))
    first = dispatch_due_backups(now=now, enqueue=False)
    (mine,) = [r for r in first.records if r.tenant_id == recorded.pk]
    # the slot is due again (put back by hand) though it has its record: no second record, the tenant moves on
    get_tenant_model().objects.filter(pk__in=[recorded.pk, fresh.pk]).update(next_backup_at=mine.slot)
    BackupRecord.objects.filter(tenant=fresh).delete()
    again = dispatch_due_backups(now=now, enqueue=False)
    assert [r.tenant_id for r in again.records if r.tenant_id in (recorded.pk, fresh.pk)] == [fresh.pk]
    assert BackupRecord.objects.filter(tenant=recorded).count() == 1
    recorded.refresh_from_db()
    assert recorded.next_backup_at > now


def test_tick_records_are_the_models_own_and_audited(fake_tenants):
    """Records inserted set-based carry the model's defaults, an audit event each, and enqueued_at when sent."""
    from backups.models import BackupEvent

    now = timezone.now()
    tenants = fake_tenants("setbased_", 3, due_at=now - timedelta(minutes=1))
    with pytest.MonkeyPatch.context() as mp:
        sent: list = []
        mp.setattr("backups.backup.enqueue.publish_messages", lambda chains: sent.extend(chains))
        mp.setattr("backups.backup.enqueue.publish_batches", lambda records: sent.extend(records))
        result = dispatch_due_backups(now=now)
    mine = [r for r in result.records if r.tenant_id in {t.pk for t in tenants}]
    assert len(mine) == 3 and sent
    reference = BackupRecord(backup_type="automatic")
    for record in mine:
        assert record.enqueued_at == now and record.created_at == now
        assert record.requested_by == {"scheduler": True} and record.manifest == {} and record.attempts == 0
        assert (record.status, record.error, record.sha256, record.stage, record.bytes_done) == (
            reference.status, reference.error, reference.sha256, reference.stage, reference.bytes_done)
        (event,) = BackupEvent.objects.filter(record=record)
        assert (event.action, event.actor, event.tenant_uid, event.schema_name) == (
            "create", {"scheduler": True}, record.tenant_uid, record.schema_name)
        assert datetime.fromisoformat(event.details["slot"]) == record.slot
    assert {n.pk for n in result.created} >= {r.pk for r in mine}


def test_a_tick_in_several_chunks_records_and_advances_every_tenant(fake_tenants, monkeypatch):
    """Chunks are pipelined: each one's statement is sent while the next is named; together they do what one did."""
    monkeypatch.setattr("backups.schedule.dispatch._CHUNK", 2)
    now = timezone.now()
    tenants = fake_tenants("chunked_", 7, due_at=now - timedelta(minutes=1))
    recorded, bad = tenants[2], tenants[3]
    first = dispatch_due_backups(now=now, enqueue=False)
    (mine,) = [r for r in first.records if r.tenant_id == recorded.pk]
    BackupRecord.objects.filter(tenant__in=tenants).exclude(pk=mine.pk).delete()
    get_tenant_model().objects.filter(pk__in=[t.pk for t in tenants]).update(next_backup_at=mine.slot)
    get_tenant_model().objects.filter(pk=bad.pk).update(backup_timezone="Mars/Olympus_Mons")
    again = dispatch_due_backups(now=now, enqueue=False)
    made = {r.tenant_id for r in again.records}
    assert made >= {t.pk for t in tenants} - {recorded.pk, bad.pk}
    assert not made & {recorded.pk, bad.pk}
    assert bad.schema_name in again.broken
    for tenant in tenants:
        assert BackupRecord.objects.filter(tenant=tenant).count() == (0 if tenant is bad else 1)
        tenant.refresh_from_db()
        assert (tenant.next_backup_at > now) == (tenant is not bad)


def test_a_chunk_that_fails_rolls_the_whole_tick_back(fake_tenants, monkeypatch):
    from backups.schedule import dispatch

    monkeypatch.setattr(dispatch, "_CHUNK", 2)
    now = timezone.now()
    tenants = fake_tenants("chunkfail_", 5, due_at=now - timedelta(minutes=1))
    statement, calls = dispatch._insert_statement, []

    def second_breaks(*args):
        calls.append(1)
        sql, params = statement(*args)
        return (sql.replace("SELECT id, tenant_id FROM ins", "SELECT id, 1 / 0 FROM ins") if len(calls) == 2
                else sql), params

    monkeypatch.setattr(dispatch, "_insert_statement", second_breaks)
    with pytest.raises(DataError, match="division by zero"):
        dispatch_due_backups(now=now, enqueue=False)
    assert not BackupRecord.objects.filter(tenant__in=tenants).exists()
    assert get_tenant_model().objects.filter(pk__in=[t.pk for t in tenants], next_backup_at__lte=now).count() == 5
