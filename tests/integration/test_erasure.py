"""Erasure by key: each tenant identity's backups are encrypted to a data key of its own (wrapped for the
deployment's age recipients, kept in the catalog and beside the objects); `erase_tenant_backups` and the end of a
deleted tenant's keep period delete every object in every target and destroy the key, so what a lock keeps is
unreadable. Real backups of a small tenant, local primary and copy, and a lock-enabled radosgw bucket."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from backups.backup.copy import backup_copy
from backups.backup.run import backup_run
from backups.catalog.manifest import manifest_key
from backups.catalog.records import backup_record_create
from backups.catalog.tenant_keys import wrapped_key_name
from backups.core.encryption import AgeDecryptingReader, DecryptionError, generate_identity, load_identities
from backups.housekeeping.erasure import expired_tenants_erase
from backups.models import BackupCopy, BackupEvent, BackupRecord, TenantKey
from backups.restore.run import restore_verify
from backups.storage import get_copy_storage, get_storage
from backups.storage.s3 import MiB


@pytest.fixture
def tenant(fake_tenants):
    (made,) = fake_tenants("erase_", 1, due_at=None, migrated=False)
    with connection.cursor() as cur:
        cur.execute(f"CREATE TABLE {made.schema_name}.django_migrations (id serial PRIMARY KEY, app varchar(255), "
                    "name varchar(255), applied timestamptz)")
        cur.execute(f"CREATE TABLE {made.schema_name}.patient_note (id serial PRIMARY KEY, body text)")
        cur.execute(f"INSERT INTO {made.schema_name}.patient_note (body) SELECT 'note ' || g "
                    "FROM generate_series(1, 200) g")
    yield made
    BackupCopy.objects.filter(tenant_uid=made.tenant_uid).delete()
    TenantKey.objects.filter(tenant_uid=made.tenant_uid).delete()


@pytest.fixture
def keys(settings, tmp_path):
    secret, public = generate_identity()
    identity = tmp_path / "identity.txt"
    identity.write_text(f"{secret}\n")
    settings.BACKUPS_AGE_RECIPIENTS = public
    settings.BACKUPS_AGE_IDENTITY_FILE = str(identity)
    return identity


@pytest.fixture
def local_targets(settings, tmp_path):
    settings.BACKUPS_STORAGE = "local"
    settings.BACKUPS_LOCAL_ROOT = str(tmp_path / "primary")
    settings.BACKUPS_COPY_STORAGE = "local"
    settings.BACKUPS_COPY_LOCAL_ROOT = str(tmp_path / "copy")
    return get_storage("local"), get_copy_storage()


def backed_up(tenant, **fields) -> BackupRecord:
    record = backup_run(record_id=backup_record_create(schema_name=tenant.schema_name, tenant=tenant, **fields).pk)
    assert record.status == BackupRecord.Status.SUCCEEDED, record.error
    return record


def test_each_tenant_identity_has_its_own_data_key_and_restores_through_it(tenant, keys, local_targets):
    primary, copy_target = local_targets
    record = backed_up(tenant)
    backup_copy(record=record)
    encryption = record.manifest["encryption"]
    key = TenantKey.objects.get(tenant_uid=tenant.tenant_uid)
    assert encryption["key_id"] == str(key.key_id) and encryption["recipient"] == key.recipient
    name = wrapped_key_name(tenant.tenant_uid, key.key_id)
    assert primary.stat(name) is not None and copy_target.stat(name) is not None  # beside the objects, both
    with pytest.raises(DecryptionError):  # the deployment's identity alone does not open the backup
        AgeDecryptingReader(io.BytesIO(primary.get_bytes(record.storage_key)), load_identities(str(keys))).read()
    assert restore_verify(schema=tenant.schema_name, record=record).ok
    second = backed_up(tenant)
    assert second.manifest["encryption"]["key_id"] == str(key.key_id)  # one key per identity


def test_a_key_that_cannot_be_unwrapped_is_named(tenant, keys, local_targets, settings, tmp_path):
    record = backed_up(tenant)
    other, _ = generate_identity()
    (tmp_path / "other.txt").write_text(other + "\n")
    settings.BACKUPS_AGE_IDENTITY_FILE = str(tmp_path / "other.txt")
    report = restore_verify(schema=tenant.schema_name, record=record)
    assert not report.ok
    assert f"The data key {record.manifest['encryption']['key_id']} of backup {record.pk} cannot be unwrapped " \
           "with the identities in BACKUPS_AGE_IDENTITY_FILE" in report.message


def test_the_wrapped_key_beside_the_objects_restores_when_the_catalog_lost_it(tenant, keys, local_targets):
    record = backed_up(tenant)
    TenantKey.objects.filter(tenant_uid=tenant.tenant_uid).delete()  # the database came back from an old dump
    assert restore_verify(schema=tenant.schema_name, record=record).ok


def test_erase_deletes_every_copy_destroys_the_key_and_is_audited(tenant, keys, local_targets):
    primary, copy_target = local_targets
    records = [backed_up(tenant), backed_up(tenant)]
    for record in records:
        backup_copy(record=record)
    key = TenantKey.objects.get(tenant_uid=tenant.tenant_uid)
    out = StringIO()
    call_command("erase_tenant_backups", tenant.schema_name, "--noinput", stdout=out)
    assert "4 objects deleted" in out.getvalue() or "objects deleted" in out.getvalue()
    assert f"Every backup of {tenant.schema_name} is erased." in out.getvalue()
    for storage in (primary, copy_target):
        assert list(storage.list(f"{tenant.schema_name}/")) == []
        assert storage.stat(wrapped_key_name(tenant.tenant_uid, key.key_id)) is None
    assert not BackupRecord.objects.filter(tenant_uid=tenant.tenant_uid).exists()
    key.refresh_from_db()
    assert key.destroyed_at is not None and key.wrapped == ""
    (event,) = BackupEvent.objects.filter(tenant_uid=tenant.tenant_uid, action=BackupEvent.Action.ERASE)
    assert event.details["objects_deleted"] >= 8 and event.details["keys_destroyed"] == 1
    assert "note 1" not in json.dumps(event.details)


def test_erase_asks_first_and_refuses_an_ambiguous_schema(tenant, keys, local_targets, monkeypatch):
    backed_up(tenant)
    monkeypatch.setattr("builtins.input", lambda prompt: "no")
    with pytest.raises(CommandError, match="Erasure cancelled: nothing was deleted."):
        call_command("erase_tenant_backups", tenant.schema_name, stdout=StringIO())
    assert BackupRecord.objects.filter(tenant_uid=tenant.tenant_uid).exists()
    with pytest.raises(CommandError, match="No backups of schema 'nobody_here' to erase"):
        call_command("erase_tenant_backups", "nobody_here", "--noinput")
    with pytest.raises(CommandError, match="--identity 'x' is not a UUID"):
        call_command("erase_tenant_backups", tenant.schema_name, "--identity", "x", "--noinput")


@pytest.fixture
def locked_primary(settings, s3_server, tmp_path):
    import uuid as uuidlib

    bucket = f"erase-{uuidlib.uuid4().hex[:12]}"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    settings.BACKUPS_STORAGE = "s3"
    settings.BACKUPS_S3_PART_SIZE = 5 * MiB
    settings.AWS_STORAGE_BUCKET_NAME = bucket
    settings.AWS_S3_ENDPOINT_URL = s3_server.endpoint_url
    settings.AWS_ACCESS_KEY_ID = s3_server.access_key_id
    settings.AWS_SECRET_ACCESS_KEY = s3_server.secret_access_key
    settings.AWS_S3_REGION_NAME = s3_server.region
    settings.AWS_S3_ADDRESSING_STYLE = "path"
    settings.AWS_S3_OBJECT_LOCK_MODE = "GOVERNANCE"
    settings.BACKUPS_COPY_STORAGE = ""
    yield get_storage("s3")
    versions = client.list_object_versions(Bucket=bucket)
    for item in versions.get("Versions", []) + versions.get("DeleteMarkers", []):
        client.delete_object(Bucket=bucket, Key=item["Key"], VersionId=item["VersionId"],
                             BypassGovernanceRetention=True)
    client.delete_bucket(Bucket=bucket)


def test_what_a_lock_keeps_is_left_unreadable(tenant, keys, locked_primary):
    record = backed_up(tenant, storage_backend="s3")
    out = StringIO()
    call_command("erase_tenant_backups", tenant.schema_name, "--noinput", stdout=out)
    text = out.getvalue()
    assert f"left under its lock: s3: {record.storage_key} (locked until" in text
    assert "it cannot be read" in text
    stored = locked_primary.get_bytes(record.storage_key)  # still there under its lock...
    with pytest.raises(DecryptionError):  # ...and nothing the deployment holds opens it
        AgeDecryptingReader(io.BytesIO(stored), load_identities(str(keys))).read()
    assert locked_primary.stat(wrapped_key_name(tenant.tenant_uid, record.manifest["encryption"]["key_id"])) is None


def test_an_unencrypted_locked_backup_is_reported_readable(tenant, locked_primary, settings):
    settings.BACKUPS_AGE_RECIPIENTS = ""
    backed_up(tenant, storage_backend="s3")
    with pytest.raises(CommandError, match="stays readable until it is deleted"):
        call_command("erase_tenant_backups", tenant.schema_name, "--noinput", stdout=StringIO())


def test_the_end_of_a_deleted_tenants_keep_period_erases(tenant, keys, local_targets, settings):
    primary, _ = local_targets
    record = backed_up(tenant)
    uid, schema = tenant.tenant_uid, tenant.schema_name
    type(tenant).objects.filter(pk=tenant.pk).delete()
    settings.BACKUPS_DELETED_TENANT_KEEP_DAYS = 30
    assert expired_tenants_erase() == []  # kept for operators a while
    assert BackupRecord.objects.filter(pk=record.pk).exists()
    (erasure,) = expired_tenants_erase(now=timezone.now() + timedelta(days=31))
    assert erasure.complete and erasure.tenant_uid == str(uid)
    assert primary.stat(record.storage_key) is None and primary.stat(manifest_key(record.storage_key)) is None
    assert TenantKey.objects.get(tenant_uid=uid).destroyed_at is not None
    assert BackupEvent.objects.filter(tenant_uid=uid, action=BackupEvent.Action.ERASE, schema_name=schema).exists()


def test_new_recipients_wrap_the_key_again_or_retire_it(tenant, keys, local_targets, settings, tmp_path):
    first = backed_up(tenant)
    key = TenantKey.objects.get(tenant_uid=tenant.tenant_uid)
    new_secret, new_public = generate_identity()
    both = tmp_path / "both.txt"
    both.write_text(keys.read_text() + new_secret + "\n")
    settings.BACKUPS_AGE_RECIPIENTS, settings.BACKUPS_AGE_IDENTITY_FILE = new_public, str(both)
    second = backed_up(tenant)  # the old identity is still at hand: the same key, wrapped for the new recipient
    assert second.manifest["encryption"]["key_id"] == str(key.key_id)
    only_new = tmp_path / "new.txt"
    only_new.write_text(new_secret + "\n")
    settings.BACKUPS_AGE_IDENTITY_FILE = str(only_new)
    assert restore_verify(schema=tenant.schema_name, record=first).ok  # old backups open with the new key alone
    third_secret, third_public = generate_identity()
    (tmp_path / "third.txt").write_text(third_secret + "\n")
    settings.BACKUPS_AGE_RECIPIENTS = third_public
    settings.BACKUPS_AGE_IDENTITY_FILE = str(tmp_path / "third.txt")
    third = backed_up(tenant)  # the key cannot be unwrapped here: retired, a new one takes over
    assert third.manifest["encryption"]["key_id"] != str(key.key_id)
    key.refresh_from_db()
    assert key.retired_at is not None and key.destroyed_at is None
    assert restore_verify(schema=tenant.schema_name, record=third).ok
