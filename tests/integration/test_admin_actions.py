"""Operators' bulk actions on tenants in the Django admin (public domain)."""

from django.utils import timezone
from django_tenants.utils import get_tenant_model

from backups.backup import enqueue
from backups.models import BackupEvent, BackupRecord


def _act(client, action: str, tenants) -> str:
    response = client.post("/admin/tenants/clinica/", {"action": action, "_selected_action": [t.pk for t in tenants]},
                           follow=True)
    assert response.status_code == 200
    return " ".join(str(m) for m in response.context["messages"])


def test_back_up_now_queues_one_manual_backup_per_idle_tenant(ops_client, fake_tenants, monkeypatch):
    sent = []
    monkeypatch.setattr(enqueue, "publish_messages", sent.extend)
    idle, busy = fake_tenants("adm_", 2, due_at=timezone.now())
    running = BackupRecord.objects.create(tenant=busy, tenant_uid=busy.tenant_uid, schema_name=busy.schema_name,
                                          file_name="x", storage_key="k/x",
                                          storage_backend="local", status="running")
    text = _act(ops_client, "back_up_now", [idle, busy])
    assert "1 backups queued" in text and f"skipped: {busy.schema_name}" in text
    (record,) = BackupRecord.objects.filter(tenant=idle)
    assert record.backup_type == "manual" and record.status == "queued" and record.enqueued_at is not None
    assert record.requested_by == {"admin": "ops-admin-test"}
    assert [c.args for c in sent] == [(record.pk,)]
    assert [c.options["queue"] for c in sent] == ["backups.dump.priority"]
    running.delete()


def test_disable_stops_automatic_backups(ops_client, fake_tenants):
    tenants = fake_tenants("adm_off_", 2, due_at=timezone.now())
    text = _act(ops_client, "disable_automatic_backups", tenants)
    assert "disabled for 2 tenants" in text
    for tenant in get_tenant_model().objects.filter(pk__in=[t.pk for t in tenants]):
        assert tenant.backup_schedule == "disabled" and tenant.next_backup_at is None


def test_deleting_a_backup_in_the_admin_deletes_its_object_and_manifest(ops_client):
    from backups.backup.run import backup_run
    from backups.catalog.manifest import manifest_key
    from backups.catalog.records import backup_record_create
    from backups.housekeeping.reconcile import storage_reconcile
    from backups.storage import get_storage

    schema, storage = "clinica_sonrisa", get_storage()
    record = backup_run(record_id=backup_record_create(schema_name=schema).pk)
    assert record.status == "succeeded", record.error
    keys = (record.storage_key, manifest_key(record.storage_key))
    try:
        response = ops_client.post(f"/admin/backups/backuprecord/{record.pk}/delete/", {"post": "yes"})
        assert response.status_code == 302
        assert not BackupRecord.objects.filter(pk=record.pk).exists()
        assert [storage.stat(key) for key in keys] == [None, None]
        assert storage_reconcile(schemas=[schema]).imported == []  # nothing left for reconcile to bring back
        assert not BackupRecord.objects.filter(storage_key=record.storage_key).exists()
        event = BackupEvent.objects.get(action="delete", details__storage_key=record.storage_key)
        assert event.actor == {"admin": "ops-admin-test"} and event.details["file_name"] == record.file_name
    finally:
        BackupRecord.objects.filter(storage_key=record.storage_key).delete()
        for key in keys:
            storage.delete(key)


def test_a_running_backup_cannot_be_deleted_in_the_admin(ops_client, fake_tenants):
    (tenant,) = fake_tenants("admdel_", 1, due_at=None)
    running = BackupRecord.objects.create(tenant=tenant, tenant_uid=tenant.tenant_uid, schema_name=tenant.schema_name,
                                          file_name="x", storage_key=f"{tenant.schema_name}/x",
                                          storage_backend="local", status="running")
    assert ops_client.post(f"/admin/backups/backuprecord/{running.pk}/delete/", {"post": "yes"}).status_code == 403
    response = ops_client.post("/admin/backups/backuprecord/", {"action": "delete_selected", "post": "yes",
                                                                 "_selected_action": [running.pk]})
    assert response.status_code == 403  # the bulk action refuses too
    assert BackupRecord.objects.filter(pk=running.pk).exists()


def test_an_operator_can_be_deleted():
    """Operators are users of the public schema; token tables (tenant apps) used to exist only in tenant schemas,
    so the cascade of a delete failed: relation "authtoken_token" does not exist."""
    from django.contrib.auth import get_user_model
    from django_tenants.utils import schema_context

    with schema_context("public"):
        User = get_user_model()
        user = User.objects.create_user(username="ops-leaving", email="ops-leaving@example.com", password="x")
        user.delete()
        assert not User.objects.filter(username="ops-leaving").exists()
