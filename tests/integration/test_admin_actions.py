"""Operators' bulk actions on tenants in the Django admin (public domain)."""

from django.utils import timezone
from django_tenants.utils import get_tenant_model

from backups.models import BackupRecord
from backups.services import enqueue


def _act(client, action: str, tenants) -> str:
    response = client.post("/admin/tenants/clinica/", {"action": action, "_selected_action": [t.pk for t in tenants]},
                           follow=True)
    assert response.status_code == 200
    return " ".join(str(m) for m in response.context["messages"])


def test_back_up_now_queues_one_manual_backup_per_idle_tenant(ops_client, fake_tenants, monkeypatch):
    sent = []
    monkeypatch.setattr(enqueue, "publish_chains", sent.extend)
    idle, busy = fake_tenants("adm_", 2, due_at=timezone.now())
    running = BackupRecord.objects.create(tenant=busy, tenant_uid=busy.tenant_uid, schema_name=busy.schema_name,
                                          file_name="x", storage_key="k/x",
                                          storage_backend="local", status="running")
    text = _act(ops_client, "back_up_now", [idle, busy])
    assert "1 backups queued" in text and f"skipped: {busy.schema_name}" in text
    (record,) = BackupRecord.objects.filter(tenant=idle)
    assert record.backup_type == "manual" and record.status == "queued" and record.enqueued_at is not None
    assert record.requested_by == {"admin": "ops-admin-test"}
    assert [c.tasks[0].args for c in sent] == [(record.pk,)]
    assert [c.tasks[0].options["queue"] for c in sent] == ["backups.dump.priority"]
    running.delete()


def test_disable_stops_automatic_backups(ops_client, fake_tenants):
    tenants = fake_tenants("adm_off_", 2, due_at=timezone.now())
    text = _act(ops_client, "disable_automatic_backups", tenants)
    assert "disabled for 2 tenants" in text
    for tenant in get_tenant_model().objects.filter(pk__in=[t.pk for t in tenants]):
        assert tenant.backup_schedule == "disabled" and tenant.next_backup_at is None
