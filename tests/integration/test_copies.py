"""The second target (BACKUPS_COPY_STORAGE): copies streamed and checked by digest, failures retried and alerted
without holding the primary back, restores, drills and downloads falling back to the copy and saying so,
reconcile checking both targets, the copy target's own retention. Real backups of a demo clinic; the copy
target is a local folder or a bucket on the session's radosgw."""

from __future__ import annotations

import contextlib
import re

import pytest
from django.utils import timezone

from backups.api.services.streaming import api_object_chunks, api_object_headers, api_object_open
from backups.backup.copy import backup_copies_retry, backup_copy, copies_retention
from backups.backup.run import backup_run
from backups.catalog.copies import newest_backup_targets
from backups.catalog.manifest import manifest_key, manifest_signature_valid
from backups.catalog.records import backup_record_create
from backups.housekeeping.reconcile import storage_reconcile
from backups.models import BackupCopy, BackupRecord
from backups.ops.metrics import render
from backups.restore.run import restore_replace, restore_verify
from backups.storage import ObjectNotFound, get_copy_storage, get_storage
from tests.storage.conftest import (  # noqa: F401 - fixtures
    SUPABASE_S3_ACCESS_KEY,
    SUPABASE_S3_SECRET_KEY,
    SUPABASE_SERVICE_KEY,
    TEST_REGION,
    new_bucket_name,
    s3_bucket,
    supabase_server,
)

from .helpers import DEMO_TABLES, table_fingerprints

SCHEMA = "clinica_sonrisa"


@pytest.fixture
def local_copy(settings, tmp_path):
    settings.BACKUPS_STORAGE = "local"
    settings.BACKUPS_AGE_RECIPIENTS = ""
    settings.BACKUPS_COPY_STORAGE = "local"
    settings.BACKUPS_COPY_LOCAL_ROOT = str(tmp_path / "copy")
    settings.ADMINS = [("ops", "ops@example.com")]
    with forgotten():
        yield get_copy_storage()


@contextlib.contextmanager
def forgotten():
    """The test's records (with their primary objects) and copy rows are gone after it: a damaged primary must not
    be a later test's newest backup, and a copy row must not name an object in another test's copy target."""
    last = BackupRecord.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    last_copy = BackupCopy.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    yield
    BackupCopy.objects.filter(pk__gt=last_copy).delete()
    for record in BackupRecord.objects.filter(pk__gt=last):
        get_storage(record.storage_backend).delete(record.storage_key)
        get_storage(record.storage_backend).delete(manifest_key(record.storage_key))
        record.delete()


@pytest.fixture
def s3_copy(settings, s3_server, s3_bucket):  # noqa: F811
    settings.BACKUPS_STORAGE = "local"
    settings.BACKUPS_AGE_RECIPIENTS = ""
    settings.BACKUPS_COPY_STORAGE = "s3"
    settings.BACKUPS_COPY_AWS_STORAGE_BUCKET_NAME = s3_bucket
    settings.BACKUPS_COPY_AWS_S3_ENDPOINT_URL = s3_server.endpoint_url
    settings.BACKUPS_COPY_AWS_ACCESS_KEY_ID = s3_server.access_key_id
    settings.BACKUPS_COPY_AWS_SECRET_ACCESS_KEY = s3_server.secret_access_key
    settings.BACKUPS_COPY_AWS_S3_REGION_NAME = s3_server.region
    settings.BACKUPS_COPY_AWS_S3_ADDRESSING_STYLE = "path"
    settings.BACKUPS_COPY_AWS_S3_MAX_ATTEMPTS = 1
    settings.BACKUPS_COPY_S3_PART_SIZE = 5 << 20
    settings.ADMINS = [("ops", "ops@example.com")]
    with forgotten():
        yield get_copy_storage()


@pytest.fixture
def supabase_copy(settings, supabase_server):  # noqa: F811
    settings.BACKUPS_STORAGE = "local"
    settings.BACKUPS_AGE_RECIPIENTS = ""
    settings.BACKUPS_COPY_STORAGE = "supabase"
    settings.BACKUPS_COPY_SUPABASE_URL = supabase_server.url
    settings.BACKUPS_COPY_SUPABASE_KEY = SUPABASE_SERVICE_KEY
    settings.BACKUPS_COPY_SUPABASE_BUCKET = new_bucket_name()
    settings.BACKUPS_COPY_SUPABASE_S3_ENDPOINT = supabase_server.s3_endpoint
    settings.BACKUPS_COPY_SUPABASE_S3_REGION = TEST_REGION
    settings.BACKUPS_COPY_SUPABASE_S3_ACCESS_KEY_ID = SUPABASE_S3_ACCESS_KEY
    settings.BACKUPS_COPY_SUPABASE_S3_SECRET_ACCESS_KEY = SUPABASE_S3_SECRET_KEY
    settings.BACKUPS_COPY_S3_PART_SIZE = 5 << 20
    target = get_copy_storage()
    target.check()  # creates its bucket
    with forgotten():
        yield target


@pytest.fixture
def locked_s3_copy(settings, s3_server):
    """The copy target is a lock-enabled bucket (COMPLIANCE, locks of seconds so the bucket can be emptied)."""
    import time
    import uuid

    bucket = f"copy-lock-{uuid.uuid4().hex[:10]}"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    settings.BACKUPS_STORAGE = "local"
    settings.BACKUPS_AGE_RECIPIENTS = ""
    settings.BACKUPS_OBJECT_LOCK_DAYS = 3 / 86400
    settings.BACKUPS_COPY_STORAGE = "s3"
    settings.BACKUPS_COPY_AWS_STORAGE_BUCKET_NAME = bucket
    settings.BACKUPS_COPY_AWS_S3_ENDPOINT_URL = s3_server.endpoint_url
    settings.BACKUPS_COPY_AWS_ACCESS_KEY_ID = s3_server.access_key_id
    settings.BACKUPS_COPY_AWS_SECRET_ACCESS_KEY = s3_server.secret_access_key
    settings.BACKUPS_COPY_AWS_S3_ADDRESSING_STYLE = "path"
    settings.BACKUPS_COPY_AWS_S3_OBJECT_LOCK_MODE = "COMPLIANCE"
    with forgotten():
        yield get_copy_storage()
    time.sleep(4)
    versions = client.list_object_versions(Bucket=bucket)
    for item in versions.get("Versions", []) + versions.get("DeleteMarkers", []):
        client.delete_object(Bucket=bucket, Key=item["Key"], VersionId=item["VersionId"])
    client.delete_bucket(Bucket=bucket)


def made(fmt: str = "sql", **fields) -> BackupRecord:
    record = backup_run(record_id=backup_record_create(schema_name=SCHEMA, fmt=fmt, **fields).pk)
    assert record.status == BackupRecord.Status.SUCCEEDED, record.error
    return record


@pytest.mark.parametrize("target", ["local_copy", "s3_copy", "supabase_copy", "locked_s3_copy"])
def test_a_backup_is_copied_with_its_signed_manifest_and_checked(request, target):
    storage = request.getfixturevalue(target)
    record = made()
    copy = backup_copy(record=record)
    assert copy.status == BackupCopy.Status.COPIED and copy.attempts == 1, copy.error
    assert storage.get_bytes(record.storage_key) == get_storage("local").get_bytes(record.storage_key)
    import json

    manifest = json.loads(storage.get_bytes(manifest_key(record.storage_key)))
    assert manifest_signature_valid(manifest) and manifest["sha256"] == record.sha256
    assert backup_copy(record=record).attempts == 1  # copied already: nothing sent again
    assert newest_backup_targets([record.tenant_uid]) == {record.tenant_uid: 2}
    if target == "locked_s3_copy":  # the copy carries its own lock in the copy target
        assert storage.lock_until(record.storage_key) is not None and copy.locked_until is not None


def test_a_copy_target_that_refuses_writes_fails_the_copy_only_and_is_retried_then_alerted(s3_copy, settings,
                                                                                          mailoutbox):
    settings.BACKUPS_COPY_AWS_SECRET_ACCESS_KEY = "wrong-secret"
    settings.BACKUPS_COPY_MAX_ATTEMPTS = 2
    record = made()
    copy = backup_copy(record=record)
    assert copy.status == BackupCopy.Status.FAILED
    assert copy.error.startswith("Copy to s3 failed: S3 refused the credentials (SignatureDoesNotMatch)")
    assert "BACKUPS_COPY_AWS_ACCESS_KEY_ID/BACKUPS_COPY_AWS_SECRET_ACCESS_KEY" in copy.error
    assert BackupRecord.objects.get(pk=record.pk).status == BackupRecord.Status.SUCCEEDED  # the primary stands
    assert newest_backup_targets([record.tenant_uid]) == {record.tenant_uid: 1}
    assert not mailoutbox
    assert backup_copies_retry()["failed"] >= 1  # the reaper's pass: the second try, still refused: ops told
    assert BackupCopy.objects.get(pk=copy.pk).attempts == 2
    assert any("could not be copied" in m.subject and record.file_name in m.subject for m in mailoutbox)
    assert 'backups_copies{status="failed"}' in render().decode()
    settings.BACKUPS_COPY_MAX_ATTEMPTS = 3
    settings.BACKUPS_COPY_AWS_SECRET_ACCESS_KEY = s3_copy.client._request_signer._credentials.secret_key
    backup_copies_retry()
    assert BackupCopy.objects.get(pk=copy.pk).status == BackupCopy.Status.COPIED
    assert s3_copy.stat(record.storage_key).size == record.size


def test_a_primary_damaged_before_the_copy_is_not_copied(local_copy):
    record = made()
    path = get_storage("local").path(record.storage_key)
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    copy = backup_copy(record=record)
    assert copy.status == BackupCopy.Status.FAILED and "does not match the size and SHA-256" in copy.error
    assert local_copy.stat(record.storage_key) is None  # aborted: nothing under the key


def test_restore_and_drill_fall_back_to_the_copy_when_the_primary_is_missing_or_damaged(local_copy):
    before = table_fingerprints(SCHEMA, DEMO_TABLES)
    record = made()
    assert backup_copy(record=record).status == BackupCopy.Status.COPIED
    primary = get_storage("local")
    path = primary.path(record.storage_key)
    good = path.read_bytes()
    path.write_bytes(good[:-10] + b"X" * 10)  # damaged
    report = restore_verify(schema=SCHEMA, record=record)
    assert report.ok, report.message
    assert "is damaged" in report.message and "its copy in the second target (local) was used" in report.message
    record.refresh_from_db()
    assert record.damaged_at is not None  # the primary's damage is on record all the same
    path.unlink()  # now missing too: a replace restore still works from the copy, and says so
    with __import__("django.db").db.connection.cursor() as cur:
        cur.execute(f"UPDATE {SCHEMA}.clinic_invoice SET paid = NOT paid WHERE id < 20")
    report = restore_replace(schema=SCHEMA, record=record, safety_backup=False)
    assert report.ok and "copy in the second target (local) was used" in report.message
    assert table_fingerprints(SCHEMA, DEMO_TABLES) == before


def test_without_a_copy_a_missing_primary_still_fails_as_before(local_copy):
    record = made()
    get_storage("local").delete(record.storage_key)
    with pytest.raises(ObjectNotFound, match="No backup object at"):
        restore_verify(schema=SCHEMA, record=record)


def test_a_download_falls_back_to_the_copy_and_says_so(local_copy):
    record = made()
    backup_copy(record=record)
    expected = get_storage("local").get_bytes(record.storage_key)
    get_storage("local").delete(record.storage_key)
    opened = api_object_open(storage=get_storage("local"), key=record.storage_key, record=record)
    assert opened.source == "copy" and api_object_headers(opened)["X-Backup-Source"] == "copy"
    assert b"".join(api_object_chunks(opened)) == expected


def test_reconcile_checks_the_copy_target_and_the_next_pass_copies_again(local_copy):
    record = made()
    backup_copy(record=record)
    local_copy.delete(record.storage_key)
    local_copy.put_bytes(f"{SCHEMA}/stranger.bin", b"x")
    result = storage_reconcile(schemas=[SCHEMA])
    assert record.storage_key in result.copy_missing and f"{SCHEMA}/stranger.bin" in result.copy_unknown
    copy = BackupCopy.objects.get(storage_key=record.storage_key)
    assert copy.status == BackupCopy.Status.FAILED and "gone from the local copy target" in copy.error
    backup_copies_retry()
    copy.refresh_from_db()
    assert copy.status == BackupCopy.Status.COPIED, copy.error
    assert local_copy.stat(record.storage_key).size == record.size
    local_copy.delete(f"{SCHEMA}/stranger.bin")


def test_the_copy_target_keeps_by_its_own_retention(local_copy, settings):
    settings.BACKUPS_COPY_KEEP_DAILY = 0
    settings.BACKUPS_COPY_KEEP_WEEKLY = 0
    settings.BACKUPS_COPY_KEEP_MONTHLY = 0  # the copy keeps only the newest automatic backup
    older = made(backup_type="automatic")
    newer = made(backup_type="automatic")
    backup_copy(record=older)
    backup_copy(record=newer)  # its copy's retention runs after it
    assert not BackupCopy.objects.filter(record=older).exists()
    assert local_copy.stat(older.storage_key) is None and local_copy.stat(manifest_key(older.storage_key)) is None
    assert BackupRecord.objects.filter(pk=older.pk).exists()  # the primary keeps it by its own policy
    assert BackupCopy.objects.get(record=newer).status == BackupCopy.Status.COPIED
    assert copies_retention(tenant_uid=newer.tenant_uid, now=timezone.now()) == []


def test_backup_tenant_returns_after_the_copy_is_made(local_copy):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("backup_tenant", SCHEMA, "--no-progress", stdout=out)
    record = BackupRecord.objects.filter(schema_name=SCHEMA).order_by("-pk").first()
    assert "copy   local: copied" in out.getvalue()
    assert local_copy.stat(record.storage_key).size == record.size


def test_backup_tenant_succeeds_when_the_copy_target_refuses_writes(s3_copy, settings):
    from io import StringIO

    from django.core.management import call_command

    settings.BACKUPS_COPY_AWS_SECRET_ACCESS_KEY = "wrong-secret"
    out = StringIO()
    call_command("backup_tenant", SCHEMA, "--no-progress", stdout=out)  # the start-up check warns, never stops
    record = BackupRecord.objects.filter(schema_name=SCHEMA).order_by("-pk").first()
    assert record.status == BackupRecord.Status.SUCCEEDED
    assert "copy   s3: failed (Copy to s3 failed: S3 refused the credentials" in out.getvalue()


def test_the_start_up_check_refuses_a_copy_lock_mode_on_a_bucket_without_object_lock(s3_copy, settings):
    from backups.ops.checks import check_configuration
    from backups.storage import StorageError

    settings.BACKUPS_COPY_AWS_S3_OBJECT_LOCK_MODE = "COMPLIANCE"
    with pytest.raises(StorageError, match="BACKUPS_COPY_AWS_S3_OBJECT_LOCK_MODE=COMPLIANCE needs a bucket with S3 "
                                           "Object Lock"):
        check_configuration()
    settings.BACKUPS_COPY_STORAGE = "ftp"
    with pytest.raises(StorageError, match="BACKUPS_COPY_STORAGE='ftp' is not a known backend"):
        check_configuration()


def test_a_workers_backup_task_copies_through_the_one_after_success(local_copy):
    from backups.tasks import run_backup

    record = backup_record_create(schema_name=SCHEMA, backup_type="automatic")
    run_backup.apply(args=[record.pk])
    record.refresh_from_db()
    assert record.status == BackupRecord.Status.SUCCEEDED, record.error
    assert BackupCopy.objects.get(record=record).status == BackupCopy.Status.COPIED
    assert local_copy.stat(record.storage_key).size == record.size


def test_the_dashboard_counts_the_targets_holding_each_tenants_newest_backup(local_copy, ops_client):
    record = made()
    backup_copy(record=record)
    html = ops_client.get("/admin/backups/backuprecord/dashboard/").content.decode()
    section = html.split('id="targets"', 1)[1].split("</div>", 1)[0]
    assert "(primary + copy in local)" in section and "in 2 targets" in section
    BackupCopy.objects.filter(record=record).update(status=BackupCopy.Status.FAILED, error="refused")
    html = ops_client.get("/admin/backups/backuprecord/dashboard/").content.decode()
    section = html.split('id="targets"', 1)[1].split("</div>", 1)[0]
    assert f"<strong>{SCHEMA}</strong>: 1 of 2" in section and re.search(r"\d+ failed cop(y|ies)", section)
