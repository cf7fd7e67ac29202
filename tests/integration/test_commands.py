"""The management commands print what they did and fail with a message, never a traceback."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from backups.models import BackupRecord


def test_backup_tenant_prints_record_file_and_size():
    out = StringIO()
    call_command("backup_tenant", "clinica_demo", "--format", "json", "--compression", "gzip", stdout=out)
    text = out.getvalue()
    record = BackupRecord.objects.order_by("-pk").first()
    assert f"record {record.pk}" in text
    assert record.storage_key in text and str(record.size) in text
    assert record.file_name.endswith(".jsonl.gz")


def test_backup_tenant_missing_schema_is_a_clear_error():
    with pytest.raises(CommandError, match="does not exist"):
        call_command("backup_tenant", "clinica_gone", stdout=StringIO())


def test_restore_tenant_verify_only_reports_row_counts():
    call_command("backup_tenant", "clinica_demo", "--format", "dump", stdout=StringIO())
    record = BackupRecord.objects.order_by("-pk").first()
    out = StringIO()
    call_command("restore_tenant", "clinica_demo", str(record.pk), "--verify-only", stdout=out)
    assert "clinic_patient" in out.getvalue() and "Row counts match the manifest." in out.getvalue()
    with pytest.raises(CommandError, match="No backup record"):
        call_command("restore_tenant", "clinica_demo", "999999999", stdout=StringIO())


def test_migrations_are_in_sync_with_models():
    out = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()
