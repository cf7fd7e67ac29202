"""history/<id>/files/: a backup's files as a tar archive, each checked before it is sent."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest
from django.core.files.storage import default_storage
from django_tenants.utils import schema_context

from backups.backup.files import walk
from backups.backup.public import public_backup_create, public_backup_run
from backups.backup.run import backup_run
from backups.catalog.file_blobs import blob_key
from backups.catalog.records import backup_record_create
from backups.core.errors import StoredObjectDamaged
from backups.models import BackupEvent, BackupRecord
from backups.storage import get_storage

SCHEMA = "clinica_demo"


def _live_files() -> dict[str, str]:
    with schema_context(SCHEMA):
        return {n: hashlib.sha256(default_storage.open(n).read()).hexdigest() for n in walk(default_storage)}


@pytest.fixture
def backup(cleanup) -> BackupRecord:
    record = backup_run(record_id=backup_record_create(schema_name=SCHEMA, fmt="dump").pk)
    assert record.status == "succeeded", record.error
    return record


def test_the_files_of_a_backup_download_as_a_tar_archive(admin, backup):
    response = admin.get(f"/api/backups/history/{backup.pk}/files/")
    assert response.status_code == 200 and response["Content-Type"] == "application/x-tar"
    assert response["Content-Disposition"].endswith('-files.tar"')
    body = b"".join(response.streaming_content)
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        got = {m.name: hashlib.sha256(tar.extractfile(m).read()).hexdigest() for m in tar.getmembers()}
    assert got == _live_files() and got
    assert BackupEvent.objects.filter(record=backup, action="download", details__via="history-files").exists()


def test_a_damaged_file_ends_the_archive_early(admin, backup):
    entry = backup.manifest["files"]["entries"][-1]
    key = blob_key(SCHEMA, backup.tenant_uid, entry["sha256"], compression=backup.compression,
                   encryption=backup.encryption)
    storage = get_storage()
    good = storage.get_bytes(key)
    storage.delete(key)
    storage.put_bytes(key, good[:-3] + b"bad")
    try:
        response = admin.get(f"/api/backups/history/{backup.pk}/files/")
        assert response.status_code == 200
        with pytest.raises(StoredObjectDamaged):
            b"".join(response.streaming_content)
        assert BackupRecord.objects.get(pk=backup.pk).damaged_at is not None
    finally:
        storage.delete(key)
        storage.put_bytes(key, good)


def test_no_files_or_not_this_tenants_answers_404(admin, cleanup, settings):
    settings.BACKUPS_FILES = False
    without = backup_run(record_id=backup_record_create(schema_name=SCHEMA, fmt="dump").pk)
    response = admin.get(f"/api/backups/history/{without.pk}/files/")
    assert response.status_code == 404 and "holds no files" in response.json()["detail"]
    public = public_backup_run(record=public_backup_create())
    assert admin.get(f"/api/backups/history/{public.pk}/files/").status_code == 404
    assert admin.get(f"/api/backups/history/{public.pk}/").status_code == 404
