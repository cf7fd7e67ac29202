"""A demo clinic backed up and restored through every backend, encrypted and not, with the real pipeline."""

import pytest

from backups.backup.run import backup_run
from backups.catalog.manifest import manifest_key
from backups.catalog.records import backup_record_create
from backups.core.encryption import generate_identity
from backups.models import BackupRecord
from backups.restore.run import restore_replace, restore_verify
from backups.storage import get_storage
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
def configured_backend(request, settings, tmp_path):
    """Point the project's settings at the session's S3 server (radosgw) or the Supabase stand-in."""
    name = request.param
    settings.BACKUPS_S3_PART_SIZE = 5 * 1024 * 1024
    if name == "s3":
        server = request.getfixturevalue("s3_server")
        settings.AWS_STORAGE_BUCKET_NAME = request.getfixturevalue("s3_bucket")
        settings.AWS_S3_ENDPOINT_URL = server.endpoint_url
        settings.AWS_ACCESS_KEY_ID = server.access_key_id
        settings.AWS_SECRET_ACCESS_KEY = server.secret_access_key
        settings.AWS_S3_REGION_NAME = server.region
    else:
        server = request.getfixturevalue("supabase_server")
        settings.SUPABASE_URL, settings.SUPABASE_KEY = server.url, SUPABASE_SERVICE_KEY
        settings.SUPABASE_BUCKET = new_bucket_name()
        settings.SUPABASE_S3_ENDPOINT, settings.SUPABASE_S3_REGION = server.s3_endpoint, TEST_REGION
        settings.SUPABASE_S3_ACCESS_KEY_ID = SUPABASE_S3_ACCESS_KEY
        settings.SUPABASE_S3_SECRET_ACCESS_KEY = SUPABASE_S3_SECRET_KEY
    get_storage(name).check()
    return name


@pytest.fixture(params=["plain", "age"])
def encryption(request, settings, tmp_path):
    if request.param == "plain":
        settings.BACKUPS_AGE_RECIPIENTS = ""
        return ""
    secret, public = generate_identity()
    identity = tmp_path / "identity.txt"
    identity.write_text(f"# test identity\n{secret}\n")
    settings.BACKUPS_AGE_RECIPIENTS = public
    settings.BACKUPS_AGE_IDENTITY_FILE = str(identity)
    return "age"


@pytest.mark.parametrize("configured_backend", ["s3", "supabase"], indirect=True)
@pytest.mark.parametrize("fmt", ["sql", "json"])
def test_backup_and_restore_through_cloud_storage(configured_backend, encryption, fmt):
    before = table_fingerprints(SCHEMA, DEMO_TABLES)
    record = backup_record_create(schema_name=SCHEMA, fmt=fmt, storage_backend=configured_backend)
    record = backup_run(record_id=record.pk)
    assert record.status == BackupRecord.Status.SUCCEEDED, record.error
    assert record.encryption == encryption
    storage = get_storage(configured_backend)
    stored = storage.get_bytes(record.storage_key)
    assert len(stored) == record.size
    if encryption:
        assert record.file_name.endswith(".age")
        assert stored.startswith(b"age-encryption.org/v1\n")
        assert record.manifest["encryption"]["method"] == "age"
        assert b"clinic_patient" not in stored
    assert storage.stat(manifest_key(record.storage_key)) is not None
    assert [o.key for o in storage.list(SCHEMA + "/") if o.key == record.storage_key] == [record.storage_key]

    verify = restore_verify(schema=SCHEMA, record=record)
    assert verify.ok, verify.message
    with __import__("django.db").db.connection.cursor() as cur:
        cur.execute(f"UPDATE {SCHEMA}.clinic_invoice SET paid = NOT paid WHERE id < 50")
    report = restore_replace(schema=SCHEMA, record=record, safety_backup=False)
    assert report.ok
    assert table_fingerprints(SCHEMA, DEMO_TABLES) == before


def test_encrypted_backup_without_the_identity_cannot_be_restored(settings, tmp_path):
    secret, public = generate_identity()
    settings.BACKUPS_AGE_RECIPIENTS = public
    record = backup_run(record_id=backup_record_create(schema_name=SCHEMA).pk)
    other_secret, _ = generate_identity()
    (tmp_path / "wrong.txt").write_text(other_secret + "\n")
    settings.BACKUPS_AGE_IDENTITY_FILE = str(tmp_path / "wrong.txt")
    before = table_fingerprints(SCHEMA, DEMO_TABLES)
    with pytest.raises(Exception, match="identit"):
        restore_replace(schema=SCHEMA, record=record, safety_backup=False)
    assert table_fingerprints(SCHEMA, DEMO_TABLES) == before
    report = restore_verify(schema=SCHEMA, record=record)
    assert not report.ok and "identit" in report.message


@pytest.mark.parametrize("configured_backend", ["s3", "supabase"], indirect=True)
def test_reconcile_rebuilds_a_lost_record_from_cloud_storage(configured_backend, settings, encryption):
    from backups.housekeeping.reconcile import storage_reconcile

    settings.BACKUPS_STORAGE = configured_backend
    record = backup_run(record_id=backup_record_create(schema_name=SCHEMA, fmt="dump").pk)
    assert record.status == BackupRecord.Status.SUCCEEDED, record.error
    BackupRecord.objects.filter(pk=record.pk).delete()
    result = storage_reconcile(schemas=[SCHEMA])
    assert record.storage_key in result.imported and record.storage_key not in result.unknown
    (rebuilt,) = BackupRecord.objects.filter(storage_backend=configured_backend, storage_key=record.storage_key)
    assert (rebuilt.sha256, rebuilt.size, rebuilt.encryption) == (record.sha256, record.size, encryption)
    assert restore_verify(schema=SCHEMA, record=rebuilt).ok
    get_storage(configured_backend).delete(record.storage_key)
    assert record.storage_key in storage_reconcile(schemas=[SCHEMA]).missing
    assert BackupRecord.objects.get(pk=rebuilt.pk).status == BackupRecord.Status.FAILED
