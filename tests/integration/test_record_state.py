"""Record state has one owner: stage and status take only their enums' values, and "active" and "finished"
are defined once per model (BackupRecord's querysets never stand in for RestoreJob's)."""

from __future__ import annotations

import ast
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from backups.models import BackupRecord, RestoreJob

SCHEMA = "clinica_state_probe"  # no tenant owns it: its records block nobody's backups


@pytest.fixture
def made() -> Iterator[dict[str, list[int]]]:
    """Ids of the records and jobs a test makes, deleted after it (no object was ever stored for them)."""
    ids: dict[str, list[int]] = {"records": [], "jobs": []}
    yield ids
    RestoreJob.objects.filter(pk__in=ids["jobs"]).delete()
    BackupRecord.objects.filter(pk__in=ids["records"]).delete()


def _record(made, **fields) -> BackupRecord:
    n = len(made["records"])
    record = BackupRecord.objects.create(tenant_uid=uuid.uuid4(), schema_name=SCHEMA, file_name=f"probe-{n}.sql",
                                         storage_backend="local", storage_key=f"{SCHEMA}/{uuid.uuid4()}.sql",
                                         **fields)
    made["records"].append(record.pk)
    return record


def _job(made, **fields) -> RestoreJob:
    job = RestoreJob.objects.create(tenant_uid=uuid.uuid4(), schema_name=SCHEMA, **fields)
    made["jobs"].append(job.pk)
    return job


def test_every_stage_and_status_of_the_enums_is_accepted(made):
    for stage in BackupRecord.Stage:
        for status in BackupRecord.Status:
            record = _record(made, stage=stage, status=status)
            record.full_clean()
    for status in RestoreJob.Status:
        _job(made, status=status).full_clean()


@pytest.mark.parametrize("field,value", [("stage", "uploading"), ("stage", "Dumping"), ("status", "cancelled")])
def test_a_backup_state_outside_the_enums_is_refused(made, field, value):
    record = _record(made)
    setattr(record, field, value)
    with pytest.raises(ValidationError) as caught:
        record.full_clean()
    assert field in caught.value.message_dict or "__all__" in caught.value.message_dict
    with pytest.raises(IntegrityError, match=f"backups_record_{field}_valid"), transaction.atomic():
        record.save(update_fields=[field])
    with pytest.raises(IntegrityError, match=f"backups_record_{field}_valid"), transaction.atomic():
        BackupRecord.objects.filter(pk=record.pk).update(**{field: value})
    record.refresh_from_db()
    assert getattr(record, field) != value


def test_a_restore_job_status_outside_its_enum_is_refused(made):
    job = _job(made)
    with pytest.raises(IntegrityError, match="backups_restore_status_valid"), transaction.atomic():
        RestoreJob.objects.filter(pk=job.pk).update(status="cancelled")
    job.status = "cancelled"
    with pytest.raises(ValidationError):
        job.full_clean()


def test_active_and_finished_select_backup_records_by_their_status(made):
    by_status = {status: _record(made, status=status).pk for status in BackupRecord.Status}
    mine = BackupRecord.objects.filter(pk__in=made["records"])
    S = BackupRecord.Status
    assert set(mine.active().values_list("pk", flat=True)) == {by_status[S.QUEUED], by_status[S.RUNNING]}
    assert set(mine.finished().values_list("pk", flat=True)) == {by_status[S.SUCCEEDED], by_status[S.FAILED]}
    for record in mine:
        assert record.is_active == (record.pk in {by_status[S.QUEUED], by_status[S.RUNNING]})
        assert record.is_finished == (not record.is_active)


def test_active_and_finished_select_restore_jobs_by_their_own_status(made):
    by_status = {status: _job(made, status=status).pk for status in RestoreJob.Status}
    mine = RestoreJob.objects.filter(pk__in=made["jobs"])
    S = RestoreJob.Status
    assert set(mine.active().values_list("pk", flat=True)) == {by_status[S.QUEUED], by_status[S.RUNNING]}
    assert set(mine.finished().values_list("pk", flat=True)) == {by_status[S.SUCCEEDED], by_status[S.FAILED]}
    assert RestoreJob.ACTIVE_STATUSES == (S.QUEUED, S.RUNNING)
    assert all(isinstance(s, RestoreJob.Status) for s in RestoreJob.ACTIVE_STATUSES + RestoreJob.FINISHED_STATUSES)
    assert all(isinstance(s, BackupRecord.Status)
               for s in BackupRecord.ACTIVE_STATUSES + BackupRecord.FINISHED_STATUSES)


# --- one owner: no module but backups.catalog.records writes a backup record's status or stage -----------------

BACKUPS = Path(__file__).resolve().parents[2] / "backups"
OWNER = BACKUPS / "catalog" / "records.py"
# RestoreJob's status is written where its jobs run and are reaped
RESTORE_JOB_WRITERS = {BACKUPS / "restore" / "jobs.py", BACKUPS / "housekeeping" / "restore_reaper.py"}
STATE = {"status", "stage"}


def _state_writes(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Assign):
            targets = [t for target in node.targets for t in (target.elts if isinstance(target, ast.Tuple)
                                                                else [target])]
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Attribute) and target.attr in STATE:
                found.append(f"{path.name}:{node.lineno} sets .{target.attr}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in {"update", "create", "bulk_create", "update_or_create", "get_or_create"}:
            written = STATE & {k.arg for k in node.keywords}
            if written:
                found.append(f"{path.name}:{node.lineno} .{node.func.attr}({', '.join(sorted(written))}=...)")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "save":
            for k in node.keywords:
                if k.arg == "update_fields" and isinstance(k.value, ast.List | ast.Tuple) and STATE & {
                        e.value for e in k.value.elts if isinstance(e, ast.Constant)}:
                    found.append(f"{path.name}:{node.lineno} .save(update_fields=[status/stage])")
    return found


def test_only_the_records_module_writes_a_backup_records_state():
    paths = [p for p in BACKUPS.rglob("*.py") if "migrations" not in p.parts and p != OWNER
             and p not in RESTORE_JOB_WRITERS]
    assert OWNER.exists() and len(paths) > 50
    offenders = [write for path in paths for write in _state_writes(path)]
    assert offenders == []
    assert _state_writes(OWNER), "the guard finds the owner's own writes (it would find anyone's)"
