"""Ops are told when automatic backups fall behind: stalled dispatcher, failing or stuck backups."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core import mail
from django.core.management import call_command
from django.utils import timezone
from django_tenants.utils import get_tenant_model

from backups.catalog import alerts
from backups.catalog.records import backup_record_create
from backups.catalog.selectors import FAILING, STALLED, STUCK, overdue_tenants
from backups.models import BackupRecord
from backups.ops.overdue import overdue_check

GRACE = 4 * 3600


@pytest.fixture
def fleet(fake_tenants, settings):
    """Seven tenants, each behind (or not) in its own way; returns them by name."""
    settings.BACKUPS_OVERDUE_GRACE_SECONDS = GRACE
    settings.ADMINS = [("Ops", "ops@example.com")]
    now = timezone.now()
    future, late, recent = now + timedelta(hours=20), now - timedelta(hours=5), now - timedelta(hours=1)
    names = ("stalled", "failing", "stuck", "fine", "recent_failure", "disabled", "failed_then_ok")
    tenants = dict(zip(names, fake_tenants("od_", len(names), due_at=future), strict=True))
    Tenant = get_tenant_model()
    Tenant.objects.filter(pk=tenants["stalled"].pk).update(next_backup_at=late)
    Tenant.objects.filter(pk=tenants["disabled"].pk).update(backup_schedule="disabled", next_backup_at=late)

    def record(name: str, slot, status: str, error: str = "") -> BackupRecord:
        made = backup_record_create(schema_name=tenants[name].schema_name, tenant=tenants[name],
                                    backup_type="automatic", slot=slot, at=slot)
        BackupRecord.objects.filter(pk=made.pk).update(status=status, error=error)
        return made

    record("failing", late, "failed", "pg_dump: error: connection to server lost\nmore detail")
    record("stuck", late, "queued")
    record("fine", late, "succeeded")
    record("recent_failure", recent, "failed", "boom")
    record("failed_then_ok", late - timedelta(days=1), "failed", "old failure")
    record("failed_then_ok", late, "succeeded")
    tenants["_now"] = now
    return tenants


def _ours(found, fleet) -> dict:
    ids = {t.pk: name for name, t in fleet.items() if name != "_now"}
    return {ids[o.tenant_id]: o for o in found if o.tenant_id in ids}


def test_each_way_of_falling_behind_is_found_and_nothing_else(fleet):
    found = _ours(overdue_tenants(now=fleet["_now"]), fleet)
    assert set(found) == {"stalled", "failing", "stuck"}
    assert found["stalled"].reason == STALLED and "beat" in found["stalled"].describe()
    assert found["failing"].reason == FAILING
    assert "connection to server lost" in found["failing"].describe()
    assert "more detail" not in found["failing"].describe()  # one line per tenant
    assert found["stuck"].reason == STUCK and "backups.dump" in found["stuck"].describe()
    assert _ours(overdue_tenants(now=fleet["_now"], grace_seconds=6 * 3600), fleet) == {}


def test_ops_get_one_mail_when_a_tenant_falls_behind_and_one_when_it_recovers(fleet):
    mail.outbox.clear()
    overdue_check(now=fleet["_now"])
    assert len(mail.outbox) == 1
    first = mail.outbox[0]
    assert first.to == ["ops@example.com"] and "overdue for backup" in first.subject
    for name in ("stalled", "failing", "stuck"):
        assert fleet[name].schema_name in first.body
    assert fleet["fine"].schema_name not in first.body
    flagged = get_tenant_model().objects.filter(pk__in=[fleet[n].pk for n in ("stalled", "failing", "stuck")])
    assert all(t.backup_overdue_since == fleet["_now"] for t in flagged)

    overdue_check(now=fleet["_now"] + timedelta(minutes=15))  # still behind: nothing new to say
    assert len(mail.outbox) == 1

    BackupRecord.objects.filter(tenant=fleet["failing"]).update(status="succeeded", error="")
    overdue_check(now=fleet["_now"] + timedelta(minutes=30))
    assert len(mail.outbox) == 2
    assert "no longer overdue" in mail.outbox[1].subject and fleet["failing"].schema_name in mail.outbox[1].body
    assert get_tenant_model().objects.get(pk=fleet["failing"].pk).backup_overdue_since is None


def test_an_alert_that_could_not_be_sent_is_sent_by_the_next_check(fleet, monkeypatch):
    mail.outbox.clear()

    def down(*args, **kwargs):
        raise ConnectionRefusedError("smtp down")

    monkeypatch.setattr(alerts, "mail_admins", down)
    result = overdue_check(now=fleet["_now"])
    assert {o.tenant_id for o in result.newly_overdue} >= {fleet["stalled"].pk}
    assert get_tenant_model().objects.get(pk=fleet["stalled"].pk).backup_overdue_since is None
    monkeypatch.undo()
    overdue_check(now=fleet["_now"])
    assert len(mail.outbox) == 1 and fleet["stalled"].schema_name in mail.outbox[0].body


def test_check_backups_exits_1_while_tenants_are_overdue(fleet):
    out = StringIO()
    with pytest.raises(SystemExit) as exit_:
        call_command("check_backups", stdout=out)
    assert exit_.value.code == 1
    assert out.getvalue().startswith("OVERDUE:") and fleet["stuck"].schema_name in out.getvalue()
    out = StringIO()
    call_command("check_backups", "--grace", str(10**9), stdout=out)
    assert out.getvalue().strip() == "OK: no tenant is overdue for backup."
