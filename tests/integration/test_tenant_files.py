"""Tenant files in the backup: stored by content once, listed in the signed manifest, brought back by a replace,
checked by a drill, swept when no backup lists them; through the filesystem storage and S3 media alike."""

from __future__ import annotations

import hashlib
import json

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django_tenants.utils import get_tenant_model, schema_context

from backups.backup.files import walk
from backups.backup.run import backup_run
from backups.catalog.file_blobs import blob_key, blob_prefix, file_blobs_sweep
from backups.catalog.finalize import backup_record_delete
from backups.catalog.manifest import manifest_key
from backups.catalog.records import backup_record_create
from backups.models import BackupRecord
from backups.restore.run import restore_replace, restore_verify
from backups.storage import get_storage

SCHEMA = "clinica_norte"


def _files(schema: str = SCHEMA) -> dict[str, str]:
    """path -> SHA-256 of every file the tenant's storage holds."""
    with schema_context(schema):
        return {name: hashlib.sha256(default_storage.open(name).read()).hexdigest() for name in walk(default_storage)}


def _backup(schema: str = SCHEMA, fmt: str = "dump") -> BackupRecord:
    record = backup_run(record_id=backup_record_create(schema_name=schema, fmt=fmt).pk)
    assert record.status == "succeeded", record.error
    return record


def _put(name: str, body: bytes, schema: str = SCHEMA) -> None:
    with schema_context(schema):
        if default_storage.exists(name):
            default_storage.delete(name)
        assert default_storage.save(name, ContentFile(body)) == name


def _delete(name: str, schema: str = SCHEMA) -> None:
    with schema_context(schema):
        default_storage.delete(name)


@pytest.fixture
def scratch_files():
    """Files the test adds under tmpfiles/, removed afterwards."""
    yield "tmpfiles/"
    with schema_context(SCHEMA):
        for name in walk(default_storage, "tmpfiles") if default_storage.exists("tmpfiles") else []:
            default_storage.delete(name)


def test_demo_clinics_have_files_and_a_backup_lists_and_stores_each_once(forget_new_backups):
    live = _files()
    assert any(n.startswith("xrays/") for n in live) and any(n.endswith(".pdf") for n in live)
    record = _backup()
    files = record.manifest["files"]
    assert {e["path"]: e["sha256"] for e in files["entries"]} == live
    assert files["count"] == len(live) and files["bytes"] == sum(e["size"] for e in files["entries"])
    stored = json.loads(get_storage().get_bytes(manifest_key(record.storage_key)))
    assert stored["files"] == files  # in the signed manifest
    storage = get_storage()
    for entry in files["entries"]:
        key = blob_key(SCHEMA, record.tenant_uid, entry["sha256"], compression=record.compression,
                       encryption=record.encryption)
        assert storage.stat(key) is not None and key.startswith(f"{SCHEMA}/{record.tenant_uid}/files/")
    assert files["new_blobs"] + 0 <= len(set(live.values()))


def test_an_unchanged_file_is_stored_once_across_backups(forget_new_backups, scratch_files):
    _put(scratch_files + "a.bin", b"A" * 50000)
    _backup()
    second = _backup()
    assert second.manifest["files"]["new_blobs"] == 0 and second.manifest["files"]["new_bytes"] == 0
    _put(scratch_files + "a.bin", b"B" * 50000)  # changed
    _put(scratch_files + "c.bin", b"A" * 50000)  # same content as a.bin had: already stored
    _put(scratch_files + "d.bin", b"D" * 10)  # new
    third = _backup()
    assert third.manifest["files"]["new_blobs"] == 2


def test_a_replace_brings_the_files_back_and_its_safety_backup_holds_the_replaced_ones(forget_new_backups,
                                                                                       scratch_files):
    _put(scratch_files + "kept.txt", b"as backed up")
    before = _files()
    record = _backup()
    _put(scratch_files + "kept.txt", b"changed after the backup")
    _put(scratch_files + "new.txt", b"added after the backup")
    xray = next(n for n in before if n.startswith("xrays/"))
    _delete(xray)
    replaced = _files()
    report = restore_replace(schema=SCHEMA, record=record)
    assert report.ok and report.files == {"written": 2, "kept": len(before) - 2, "deleted": 1}, report.files
    assert _files() == before
    safety = BackupRecord.objects.get(pk=report.safety_record_id)
    assert {e["path"]: e["sha256"] for e in safety.manifest["files"]["entries"]} == replaced


def test_the_verify_drill_checks_every_files_digest(forget_new_backups, scratch_files):
    _put(scratch_files + "scan.bin", b"scan" * 1000)
    record = _backup()
    report = restore_verify(schema=SCHEMA, record=record)
    assert report.ok and report.files["checked"] == len(record.manifest["files"]["entries"])
    assert "files match their SHA-256" in report.message
    entry = next(e for e in record.manifest["files"]["entries"] if e["path"] == scratch_files + "scan.bin")
    key = blob_key(SCHEMA, record.tenant_uid, entry["sha256"], compression=record.compression,
                   encryption=record.encryption)
    storage = get_storage()
    good = storage.get_bytes(key)
    try:
        storage.delete(key)
        storage.put_bytes(key, good[:-4] + b"evil")
        bad = restore_verify(schema=SCHEMA, record=record)
        assert not bad.ok and "files failed their check" in bad.message and "scan.bin" in bad.message
    finally:
        storage.delete(key)
        storage.put_bytes(key, good)


def test_retention_removes_only_the_blobs_no_backup_lists(forget_new_backups, scratch_files):
    # what earlier tests' deleted backups left is the next sweep's: gone before this test counts
    file_blobs_sweep(storage=get_storage(), schema=SCHEMA, uid=get_tenant_model().objects.get(
        schema_name=SCHEMA).tenant_uid)
    _put(scratch_files + "shared.bin", b"S" * 1000)
    _put(scratch_files + "only-first.bin", b"F" * 1000)
    first = _backup()
    _delete(scratch_files + "only-first.bin")
    second = _backup()
    storage = get_storage()
    uid = first.tenant_uid
    key = lambda body: blob_key(SCHEMA, uid, hashlib.sha256(body).hexdigest(),  # noqa: E731
                                compression=first.compression, encryption=first.encryption)
    # the catalog lost the first record, but its signed manifest is still in the storage: its blobs stay
    BackupRecord.objects.filter(pk=first.pk).update(tenant_uid=__import__("uuid").uuid4())
    assert file_blobs_sweep(storage=storage, schema=SCHEMA, uid=uid) == 0
    BackupRecord.objects.filter(pk=first.pk).update(tenant_uid=uid)
    backup_record_delete(record=first)
    removed = file_blobs_sweep(storage=storage, schema=SCHEMA, uid=uid)
    assert removed >= 1
    assert storage.stat(key(b"F" * 1000)) is None and storage.stat(key(b"S" * 1000)) is not None
    assert all(storage.stat(blob_key(SCHEMA, uid, e["sha256"], compression=second.compression,
                                     encryption=second.encryption)) for e in second.manifest["files"]["entries"])
    assert all(o.key.startswith(blob_prefix(SCHEMA, uid)) for o in storage.list(blob_prefix(SCHEMA, uid)))


def test_s3_media_with_a_per_tenant_location_is_backed_up_and_restored(forget_new_backups, settings, s3_server):
    bucket = "tenant-media-h26"
    s3_server.create_bucket(bucket)
    s3_server.empty_bucket(bucket)
    settings.AWS_S3_ENDPOINT_URL, settings.AWS_S3_REGION_NAME = s3_server.endpoint_url, s3_server.region
    settings.AWS_ACCESS_KEY_ID, settings.AWS_SECRET_ACCESS_KEY = s3_server.access_key_id, s3_server.secret_access_key
    settings.MEDIA_S3_BUCKET = bucket
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "project.media.TenantS3Storage"}}
    _put("xrays/1/a.png", b"\x89PNG" + b"x" * 3000)
    _put("consents/2.pdf", b"%PDF-1.4 consent")
    _put("xrays/1/a.png", b"\x89PNG" + b"x" * 3000, schema="clinica_sonrisa")  # another tenant, another folder
    before = _files()
    assert set(before) == {"xrays/1/a.png", "consents/2.pdf"}
    record = _backup()
    assert {e["path"] for e in record.manifest["files"]["entries"]} == set(before)
    _delete("consents/2.pdf")
    _put("xrays/1/a.png", b"overwritten")
    report = restore_replace(schema=SCHEMA, record=record, safety_backup=False)
    assert report.ok, report.message
    assert _files() == before
    assert _files("clinica_sonrisa") == {"xrays/1/a.png": hashlib.sha256(b"\x89PNG" + b"x" * 3000).hexdigest()}


def test_a_storage_shared_by_all_tenants_is_not_copied_into_each_backup(forget_new_backups, settings, caplog):
    settings.STORAGES = {**settings.STORAGES,
                         "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"}}
    record = _backup()
    assert "files" not in record.manifest
    assert "not per tenant (set BACKUPS_FILES_STORAGE)" in caplog.text
    settings.BACKUPS_FILES_STORAGE = "django_tenants.files.storage.TenantFileSystemStorage"  # a callable: the class
    assert _backup().manifest["files"]["count"] > 0


def test_a_blob_no_manifest_lists_is_stored_again_never_counted_on(forget_new_backups, scratch_files):
    from backups import conf
    from backups.conf import backups_settings

    body = b"remains of a power loss" * 300
    _put(scratch_files + "r.bin", body)
    uid = get_tenant_model().objects.get(schema_name=SCHEMA).tenant_uid
    key = blob_key(SCHEMA, uid, hashlib.sha256(body).hexdigest(), compression=backups_settings.BACKUPS_COMPRESSION,
                   encryption=conf.default_encryption())
    storage = get_storage()
    storage.delete(key)
    storage.put_bytes(key, b"")  # blobs are synced together before their manifest: a crash can leave this
    record = _backup()
    assert record.manifest["files"]["new_blobs"] >= 1 and storage.get_bytes(key) != b""
    report = restore_verify(schema=SCHEMA, record=record)
    assert report.ok, report.message
