"""S3 Object Lock (AWS_S3_OBJECT_LOCK_MODE) against radosgw: every object and manifest locked at least as long as
retention keeps it, deletes refused (and retention waiting, saying for what) until the date, the start-up check
refusing a lock mode on a bucket without Object Lock."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from backups.backup.on_demand import api_record_delete
from backups.backup.run import backup_run
from backups.catalog.finalize import retention_apply, retention_waiting
from backups.catalog.manifest import manifest_key
from backups.catalog.records import backup_record_create, backup_record_set_locked_until
from backups.core.service_errors import ConflictError
from backups.models import BackupEvent, BackupRecord
from backups.ops.checks import check_configuration
from backups.storage import ObjectLocked, StorageError, get_storage
from backups.storage.s3 import MiB
from tests.storage.conftest import make_s3_storage, s3_bucket  # noqa: F401 - a fixture

SCHEMA = "clinica_norte"


@pytest.fixture
def lock_bucket(s3_server):
    """A new bucket created with Object Lock, emptied (every version, bypassing GOVERNANCE) and removed after."""
    name = f"lock-{uuid.uuid4().hex[:12]}"
    client = s3_server.client()
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    yield name
    deadline = time.monotonic() + 30
    while True:
        versions = client.list_object_versions(Bucket=name)
        doomed = versions.get("Versions", []) + versions.get("DeleteMarkers", [])
        for item in doomed:
            try:
                client.delete_object(Bucket=name, Key=item["Key"], VersionId=item["VersionId"],
                                     BypassGovernanceRetention=True)
            except Exception:  # noqa: BLE001 - a COMPLIANCE lock: wait for it (tests keep those to seconds)
                pass
        if not doomed:
            break
        if time.monotonic() > deadline:
            return  # left for radosgw's next start; never fails the test that used it
        time.sleep(1)
    client.delete_bucket(Bucket=name)


@pytest.fixture
def locked_s3(settings, s3_server, lock_bucket):
    """The project's S3 settings on the lock-enabled bucket, GOVERNANCE mode."""
    settings.BACKUPS_S3_PART_SIZE = 5 * MiB
    settings.AWS_STORAGE_BUCKET_NAME = lock_bucket
    settings.AWS_S3_ENDPOINT_URL = s3_server.endpoint_url
    settings.AWS_ACCESS_KEY_ID = s3_server.access_key_id
    settings.AWS_SECRET_ACCESS_KEY = s3_server.secret_access_key
    settings.AWS_S3_REGION_NAME = s3_server.region
    settings.AWS_S3_ADDRESSING_STYLE = "path"
    settings.AWS_S3_OBJECT_LOCK_MODE = "GOVERNANCE"
    settings.BACKUPS_STORAGE = "s3"
    settings.BACKUPS_AGE_RECIPIENTS = ""
    get_storage("s3").check()
    last = BackupRecord.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    yield get_storage("s3")
    # the rows only: their objects go with the bucket, and other tests must not meet records of a bucket gone
    BackupRecord.objects.filter(pk__gt=last).delete()


def test_start_up_check_refuses_a_lock_mode_on_a_bucket_without_object_lock(settings, s3_server, s3_bucket):  # noqa: F811
    storage = make_s3_storage(s3_server, bucket=s3_bucket, object_lock_mode="COMPLIANCE")
    with pytest.raises(StorageError, match=r"AWS_S3_OBJECT_LOCK_MODE=COMPLIANCE needs a bucket with S3 Object Lock"):
        storage.check()
    settings.BACKUPS_STORAGE = "s3"
    settings.AWS_STORAGE_BUCKET_NAME = s3_bucket
    settings.AWS_S3_ENDPOINT_URL = s3_server.endpoint_url
    settings.AWS_ACCESS_KEY_ID, settings.AWS_SECRET_ACCESS_KEY = s3_server.access_key_id, s3_server.secret_access_key
    settings.AWS_S3_OBJECT_LOCK_MODE = "GOVERNANCE"
    with pytest.raises(StorageError, match=f"bucket {s3_bucket} has none"):
        check_configuration()
    settings.AWS_S3_OBJECT_LOCK_MODE = "forever"
    with pytest.raises(StorageError, match=r"AWS_S3_OBJECT_LOCK_MODE='forever' is not GOVERNANCE, COMPLIANCE"):
        get_storage("s3")
    settings.AWS_S3_OBJECT_LOCK_MODE = ""
    get_storage("s3").check()  # without a lock mode the same bucket is fine


def test_the_check_passes_on_a_lock_bucket_and_leaves_no_probe_version(s3_server, lock_bucket):
    storage = make_s3_storage(s3_server, bucket=lock_bucket, object_lock_mode="COMPLIANCE")
    storage.check()
    assert s3_server.client().list_object_versions(Bucket=lock_bucket).get("Versions", []) == []


@pytest.mark.parametrize("size", [100, 12 * MiB], ids=["one-put", "multipart"])
def test_written_objects_carry_the_retain_until_date_and_cannot_be_deleted_before(s3_server, lock_bucket, size):
    storage = make_s3_storage(s3_server, bucket=lock_bucket, object_lock_mode="COMPLIANCE")
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=4)
    with storage.open_write("clinic/x/file.bin", retain_until=until) as writer:
        writer.write(b"x" * size)
        writer.commit()
    assert storage.lock_until("clinic/x/file.bin") == until
    with pytest.raises(ObjectLocked, match="locked until .* by S3 Object Lock") as caught:
        storage.delete("clinic/x/file.bin")
    assert caught.value.until == until
    assert storage.stat("clinic/x/file.bin").size == size  # still there, not hidden behind a delete marker
    time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 1.5)
    storage.delete("clinic/x/file.bin")
    assert storage.stat("clinic/x/file.bin") is None
    assert s3_server.client().list_object_versions(Bucket=lock_bucket).get("Versions", []) == []  # every version


def test_a_later_date_extends_the_lock_and_an_earlier_one_changes_nothing(s3_server, lock_bucket):
    storage = make_s3_storage(s3_server, bucket=lock_bucket, object_lock_mode="GOVERNANCE")
    first = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    storage.put_bytes("clinic/x/m.json", b"{}", retain_until=first)
    storage.extend_lock("clinic/x/m.json", first - timedelta(minutes=30))
    assert storage.lock_until("clinic/x/m.json") == first
    storage.extend_lock("clinic/x/m.json", first + timedelta(days=2))
    assert storage.lock_until("clinic/x/m.json") == first + timedelta(days=2)


def test_a_backup_and_its_manifest_are_locked_as_long_as_retention_keeps_them(locked_s3, settings):
    settings.BACKUPS_OBJECT_LOCK_DAYS = 2
    manual = backup_run(record_id=backup_record_create(schema_name=SCHEMA, storage_backend="s3").pk)
    assert manual.status == BackupRecord.Status.SUCCEEDED, manual.error
    manual.refresh_from_db()
    assert manual.locked_until is not None
    assert timedelta(days=2, minutes=-5) < manual.locked_until - manual.created_at < timedelta(days=2, minutes=5)
    assert abs(locked_s3.lock_until(manual.storage_key) - manual.locked_until) < timedelta(seconds=1)
    assert abs(locked_s3.lock_until(manifest_key(manual.storage_key)) - manual.locked_until) < timedelta(seconds=1)

    automatic = backup_record_create(schema_name=SCHEMA, storage_backend="s3", backup_type="automatic")
    automatic = backup_run(record_id=automatic.pk)
    automatic.refresh_from_db()
    keep_daily = automatic.tenant.backup_keep_daily
    assert automatic.locked_until - automatic.created_at >= timedelta(days=keep_daily + 1) - timedelta(minutes=5)


def test_a_locked_backup_is_refused_with_its_date_and_stays(locked_s3):
    record = backup_run(record_id=backup_record_create(schema_name=SCHEMA, storage_backend="s3").pk)
    record.refresh_from_db()
    with pytest.raises(ConflictError, match=r"is locked until .*\(AWS_S3_OBJECT_LOCK_MODE=GOVERNANCE\)"):
        api_record_delete(record=record, actor={"id": 1}, ip_address=None)
    record.refresh_from_db()
    assert record.stage == BackupRecord.Stage.DONE and record.status == BackupRecord.Status.SUCCEEDED
    assert locked_s3.stat(record.storage_key) is not None
    assert not BackupEvent.objects.filter(record=record, action=BackupEvent.Action.DELETE).exists()
    # the catalog forgot the date: the store's lock still refuses, and the catalog learns it back
    backup_record_set_locked_until(record=record, until=None)
    with pytest.raises(ConflictError, match="is locked until"):
        api_record_delete(record=record, actor={"id": 1}, ip_address=None)
    record.refresh_from_db()
    assert record.locked_until is not None and record.stage == BackupRecord.Stage.DONE


def test_retention_waits_for_locked_backups_lists_them_and_deletes_them_once_unlocked(locked_s3, settings):
    settings.BACKUPS_OBJECT_LOCK_DAYS = 5 / 86400  # five seconds
    older = backup_run(record_id=backup_record_create(schema_name=SCHEMA, storage_backend="s3").pk)
    newer = backup_run(record_id=backup_record_create(schema_name=SCHEMA, storage_backend="s3").pk)
    older.refresh_from_db()
    assert older.locked_until is not None and older.locked_until > timezone.now()
    BackupRecord.objects.filter(pk=older.pk).update(created_at=timezone.now() - timedelta(days=3))
    settings.BACKUPS_MANUAL_RETENTION_DAYS = 1  # the older manual backup is now past what retention keeps
    tenant_id = older.tenant_id

    waits = retention_waiting(tenant_id=tenant_id)
    assert [(w.record_id, w.file_name) for w in waits] == [(older.pk, older.file_name)]
    out = StringIO()
    call_command("list_backups", SCHEMA, stdout=out)
    line = next(line for line in out.getvalue().splitlines() if older.file_name in line)
    assert "locked until" in line and "(retention waits for it)" in line
    assert older.pk not in retention_apply(tenant_id=tenant_id)
    assert BackupRecord.objects.get(pk=older.pk).status == BackupRecord.Status.SUCCEEDED
    assert locked_s3.stat(older.storage_key) is not None

    time.sleep(max(0.0, (older.locked_until - timezone.now()).total_seconds()) + 1.5)
    assert retention_waiting(tenant_id=tenant_id) == []
    assert older.pk in retention_apply(tenant_id=tenant_id)
    assert not BackupRecord.objects.filter(pk=older.pk).exists()
    assert locked_s3.stat(older.storage_key) is None and locked_s3.stat(manifest_key(older.storage_key)) is None
    assert BackupRecord.objects.filter(pk=newer.pk).exists()  # the newest is never deleted
    newer.refresh_from_db()
    assert newer.locked_until > timezone.now()  # renewed by the pass: kept without an end, locked ahead
