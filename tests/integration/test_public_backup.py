"""The public schema's backups: `backup_tenant public`, beat's entry, retention, protection, never a tenant's."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django_tenants.utils import get_tenant_model

from backups.backup.on_demand import api_records_for_tenant
from backups.backup.public import public_backup_if_due, public_records
from backups.catalog.finalize import backup_record_delete
from backups.catalog.manifest import manifest_key, manifest_signature_valid
from backups.core.encryption import generate_identity
from backups.core.errors import RestoreFailed
from backups.core.naming import PUBLIC_UID
from backups.housekeeping.reconcile import storage_reconcile
from backups.models import BackupRecord
from backups.restore.run import restore_replace, restore_verify
from backups.storage import get_storage


@pytest.fixture(autouse=True)
def no_public_backups_left():
    """Each test starts and ends without public backups (they would make the next one's tick "not due")."""
    for record in public_records():
        backup_record_delete(record=record)
    yield
    for record in public_records():
        backup_record_delete(record=record)


def _backup_public() -> BackupRecord:
    out = StringIO()
    call_command("backup_tenant", "public", "--no-progress", stdout=out)
    record_id = int(out.getvalue().split()[1])
    return BackupRecord.objects.get(pk=record_id)


def test_backup_tenant_public_backs_up_the_shared_tables_under_their_own_identity():
    record = _backup_public()
    assert record.status == "succeeded", record.error
    assert record.tenant is None and record.tenant_uid == PUBLIC_UID and record.tenant_deleted_at is None
    assert record.format == "dump" and record.schema_name == "public"
    assert record.storage_key.startswith(f"public/{PUBLIC_UID}/backup-dump-public-")
    counts = record.manifest["row_counts"]
    tenants = get_tenant_model().objects.count()
    assert counts["tenants_clinica"] == tenants and counts["tenants_domain"] >= 1
    assert "backups_backuprecord" in counts and "django_celery_beat_periodictask" in counts
    assert "accounts_user" in counts  # operators (the admin's superusers) live in public
    stored = json.loads(get_storage().get_bytes(manifest_key(record.storage_key)))
    assert manifest_signature_valid(stored) and stored["schema"] == "public"


def test_a_public_backup_is_encrypted_like_tenant_data(settings, tmp_path):
    secret, public = generate_identity()
    (tmp_path / "id.txt").write_text(secret + "\n")
    settings.BACKUPS_AGE_RECIPIENTS, settings.BACKUPS_AGE_IDENTITY_FILE = public, str(tmp_path / "id.txt")
    record = _backup_public()
    assert record.status == "succeeded" and record.encryption == "age"
    head = get_storage().get_bytes(record.storage_key)[:40]
    assert head.startswith(b"age-encryption.org/v1")
    assert b"tenants_clinica" not in get_storage().get_bytes(record.storage_key)


def test_no_tenant_api_lists_or_restores_the_public_backups():
    record = _backup_public()
    for tenant in get_tenant_model().objects.all():  # the demo's public tenant too
        assert not api_records_for_tenant(tenant=tenant).filter(pk=record.pk).exists()
    for restore in (restore_replace, restore_verify):
        with pytest.raises(RestoreFailed, match="only recover_deployment"):
            restore(schema="public", record=record)
    with pytest.raises(RestoreFailed, match="only recover_deployment"):
        restore_verify(schema="clinica_demo", record=record)
    with pytest.raises(CommandError):
        call_command("restore_tenant", "public", str(record.pk), "--noinput", stdout=StringIO(), stderr=StringIO())
    assert BackupRecord.objects.get(pk=record.pk).status == "succeeded"


def test_backup_tenant_public_refuses_another_format():
    with pytest.raises(CommandError, match="dump format only"):
        call_command("backup_tenant", "public", "--format", "json", stdout=StringIO())
    assert not public_records().exists()


def test_beats_entry_backs_up_once_per_interval_and_keeps_what_retention_says(settings):
    settings.BACKUPS_PUBLIC_BACKUP_SECONDS = 86400
    first = public_backup_if_due()
    assert first is not None and first.status == "succeeded" and first.backup_type == "automatic"
    assert public_backup_if_due() is None  # not due again within the day
    settings.BACKUPS_PUBLIC_BACKUP_SECONDS = 0
    assert public_backup_if_due() is None  # off
    settings.BACKUPS_PUBLIC_BACKUP_SECONDS = 0.001  # due at every tick: retention now keeps the newest only
    settings.BACKUPS_PUBLIC_KEEP_DAILY, settings.BACKUPS_PUBLIC_KEEP_WEEKLY = 1, 0
    settings.BACKUPS_PUBLIC_KEEP_MONTHLY = 0
    second = public_backup_if_due()
    assert second.status == "succeeded"
    assert list(public_records()) == [second]
    assert get_storage().stat(first.storage_key) is None and get_storage().stat(second.storage_key) is not None


def test_reconcile_rebuilds_a_lost_public_record_as_the_deployments_not_a_deleted_tenants():
    record = _backup_public()
    BackupRecord.objects.filter(pk=record.pk).delete()
    result = storage_reconcile(schemas=["public"])
    assert result.imported == [record.storage_key]
    (rebuilt,) = public_records()
    assert rebuilt.tenant is None and rebuilt.tenant_deleted_at is None and rebuilt.status == "succeeded"
