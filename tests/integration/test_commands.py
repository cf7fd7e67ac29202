"""The management commands print what they did and fail with a message, never a traceback."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django_tenants.utils import get_tenant_model

from backups.models import BackupRecord


def test_backup_tenant_prints_record_file_and_size():
    out = StringIO()
    call_command("backup_tenant", "clinica_demo", "--format", "json", "--compression", "gzip", stdout=out)
    text = out.getvalue()
    record = BackupRecord.objects.order_by("-pk").first()
    assert f"record {record.pk}" in text
    assert record.storage_key in text and str(record.size) in text
    assert record.file_name.endswith(".jsonl.gz")


def test_backup_tenant_missing_schema_is_a_clear_error_and_records_nothing():
    before = BackupRecord.objects.count()
    with pytest.raises(CommandError, match="No tenant has the schema 'clinica_gone'"):
        call_command("backup_tenant", "clinica_gone", stdout=StringIO())
    assert BackupRecord.objects.count() == before


def test_backup_tenant_moves_the_tenants_last_backup_like_a_worker():
    Tenant = get_tenant_model()
    Tenant.objects.filter(schema_name="clinica_norte").update(last_backup_at=None)
    err = StringIO()
    call_command("backup_tenant", "clinica_norte", stdout=StringIO(), stderr=err)
    record = BackupRecord.objects.order_by("-pk").first()
    assert Tenant.objects.get(schema_name="clinica_norte").last_backup_at == record.finished_at


def test_backup_tenant_prints_plain_progress_lines_off_a_terminal(monkeypatch):
    import backups.management.commands.backup_tenant as command

    real = command.shown_progress
    monkeypatch.setattr(command, "shown_progress", lambda rid, out: real(rid, out, every=0.05, plain_every=0.05))
    err = StringIO()
    call_command("backup_tenant", "clinica_demo", stdout=StringIO(), stderr=err)
    lines = [line for line in err.getvalue().splitlines() if line]
    assert lines, "no progress line was printed"
    assert all(line.startswith(("queued", "running", "succeeded")) and " MB" in line for line in lines), lines
    assert "\r" not in err.getvalue()


def test_restore_tenant_asks_before_replacing(monkeypatch):
    record = BackupRecord.objects.filter(schema_name="clinica_demo", status="succeeded").order_by("-pk").first() \
        or _backup("clinica_demo")
    before = BackupRecord.objects.count()
    monkeypatch.setattr("builtins.input", lambda prompt: "clinica_sonrisa")  # the wrong name
    with pytest.raises(CommandError, match="Restore cancelled: nothing was changed"):
        call_command("restore_tenant", "clinica_demo", str(record.pk), stdout=StringIO())
    assert BackupRecord.objects.count() == before  # not even the safety backup was taken


def test_list_backups_shows_the_tenants_backups_newest_first():
    first, second = _backup("clinica_sonrisa"), _backup("clinica_sonrisa")
    out = StringIO()
    call_command("list_backups", "clinica_sonrisa", "--limit", "2", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:3] == ["id", "created", "type"]
    assert [int(line.split()[0]) for line in lines[1:]] == [second.pk, first.pk]
    assert second.file_name in lines[1] and "succeeded" in lines[1]
    with pytest.raises(CommandError, match="No tenant has the schema"):
        call_command("list_backups", "clinica_gone", stdout=StringIO())


def _backup(schema: str) -> BackupRecord:
    call_command("backup_tenant", schema, "--no-progress", stdout=StringIO())
    return BackupRecord.objects.order_by("-pk").first()


def test_restore_tenant_verify_only_reports_row_counts():
    call_command("backup_tenant", "clinica_demo", "--format", "dump", stdout=StringIO())
    record = BackupRecord.objects.order_by("-pk").first()
    out = StringIO()
    call_command("restore_tenant", "clinica_demo", str(record.pk), "--verify-only", stdout=out)
    assert "clinic_patient" in out.getvalue() and "Row counts match the manifest." in out.getvalue()
    with pytest.raises(CommandError, match="No backup record"):
        call_command("restore_tenant", "clinica_demo", "999999999", stdout=StringIO())


def test_restore_tenant_of_an_object_the_storage_lost_is_a_message_not_a_traceback():
    from backups.storage import get_storage

    call_command("backup_tenant", "clinica_demo", "--format", "dump", stdout=StringIO())
    record = BackupRecord.objects.order_by("-pk").first()
    get_storage(record.storage_backend).delete(record.storage_key)
    with pytest.raises(CommandError, match=f"Restore of backup {record.pk} into clinica_demo failed, nothing was "
                                           "changed: No backup object at"):
        call_command("restore_tenant", "clinica_demo", str(record.pk), "--verify-only", stdout=StringIO())


def test_migrations_are_in_sync_with_models():
    out = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


@pytest.mark.parametrize("how", ["raises", "returns"])
def test_a_transient_failure_under_backup_tenant_never_leaves_a_queued_record(monkeypatch, how):
    import backups.backup.batch.run as pipeline
    from backups.catalog.records import backup_record_mark_queued
    from backups.core.errors import TransientBackupError

    def transient(*, record_id, task_id=""):  # the pipeline's member step: backup_tenant is a batch of one
        record = backup_record_mark_queued(record=BackupRecord.objects.get(pk=record_id),
                                           error="S3 unreachable mid-upload")
        if how == "raises":
            raise TransientBackupError("S3 unreachable mid-upload")
        return record

    monkeypatch.setattr(pipeline, "backup_run", transient)
    with pytest.raises(CommandError, match="S3 unreachable mid-upload"):
        call_command("backup_tenant", "clinica_sonrisa", "--no-progress", stdout=StringIO())
    record = BackupRecord.objects.filter(schema_name="clinica_sonrisa").order_by("-pk").first()
    assert record.status == BackupRecord.Status.FAILED and "S3 unreachable" in record.error
