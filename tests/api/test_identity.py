"""A tenant is an identity, never a reusable schema name: a later tenant with the same schema name sees nothing.

The reproduction: clinic A is deleted and a new clinic is created with A's schema name and its own
admin. Here the new clinic is clinica_demo itself given a fresh tenant_uid (what a recreated tenant
gets), so its users, domain and schema stay while its identity is new; the old identity's backup,
events, restore job, stored object and signed link must all be out of its reach.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from django_tenants.utils import get_tenant_model

from backups.backup.run import backup_run
from backups.catalog.records import backup_record_create
from backups.core.errors import RestoreFailed
from backups.models import BackupEvent, BackupRecord, RestoreJob
from backups.restore.run import restore_replace, restore_verify
from backups.storage import get_storage

from .conftest import api_client

SCHEMA = "clinica_demo"


@pytest.fixture
def old_identity(creds) -> Iterator[dict]:
    """A backup, an event trail, a restore job and a signed link of clinica_demo's identity; then a new identity."""
    Tenant = get_tenant_model()
    tenant = Tenant.objects.get(schema_name=SCHEMA)
    old_uid = tenant.tenant_uid
    record = backup_run(record_id=backup_record_create(schema_name=SCHEMA, tenant=tenant).pk)
    assert record.status == BackupRecord.Status.SUCCEEDED, record.error
    job = RestoreJob.objects.create(tenant=tenant, tenant_uid=old_uid, schema_name=SCHEMA, record=record,
                                    mode="verify", status="succeeded")
    link = get_storage("local").url(record.storage_key, 3600).split("/api/", 1)[1]
    admin = api_client(SCHEMA, f"Token {creds[SCHEMA].admin_token}")
    assert admin.get(f"/api/backups/history/{record.pk}/").status_code == 200  # the old identity sees it
    Tenant.objects.filter(pk=tenant.pk).update(tenant_uid=uuid.uuid4())  # "deleted, then created again"
    try:
        yield {"record": record, "job": job, "link": "/api/" + link, "admin": admin}
    finally:
        Tenant.objects.filter(pk=tenant.pk).update(tenant_uid=old_uid)
        job.delete()
        get_storage("local").delete(record.storage_key)
        get_storage("local").delete(record.storage_key + ".manifest.json")
        record.delete()


def test_a_later_tenant_with_the_same_schema_name_sees_nothing_of_the_old_one(old_identity):
    admin, record, job = old_identity["admin"], old_identity["record"], old_identity["job"]
    history = admin.get("/api/backups/history/").json()
    assert record.pk not in [r["id"] for r in history["results"]]
    for path in (f"/api/backups/history/{record.pk}/", f"/api/backups/history/{record.pk}/download/",
                 f"/api/backups/restores/{job.pk}/"):
        assert admin.get(path).status_code == 404, path
    audit = admin.get("/api/backups/audit/").json()
    assert record.pk not in [e.get("record_id") for e in audit["results"]]
    assert BackupEvent.objects.filter(record=record).exists()  # kept, for operators
    listed = admin.get("/api/backups/cloud/list/").json()
    assert record.storage_key not in [b["s3_key"] for b in listed["backups"]]
    for method, path in (("post", "/api/backups/cloud/download/"), ("post", "/api/backups/cloud/get-url/")):
        response = getattr(admin, method)(path, {"s3_key": record.storage_key, "expiration": 60}, format="json")
        assert response.status_code == 404, (path, response.content)
    deleted = admin.delete("/api/backups/cloud/delete/", {"s3_key": record.storage_key}, format="json")
    assert deleted.status_code == 404 and get_storage("local").stat(record.storage_key) is not None
    assert api_client(SCHEMA).get(old_identity["link"]).status_code == 404  # the old signed link is dead
    restore = admin.post(f"/api/backups/history/{record.pk}/restore/", {"mode": "replace", "confirm": SCHEMA},
                         format="json")
    assert restore.status_code == 404


def test_services_refuse_to_restore_another_identity(old_identity):
    record = old_identity["record"]
    with pytest.raises(RestoreFailed, match="another tenant identity"):
        restore_replace(schema=SCHEMA, record=record)
    with pytest.raises(RestoreFailed, match="another tenant identity"):
        restore_verify(schema=SCHEMA, record=record)


def test_deleting_a_tenant_keeps_its_backups_bound_to_its_identity(fake_tenants):  # noqa: F811
    (tenant,) = fake_tenants("gone_", 1, due_at=None)
    uid = tenant.tenant_uid
    record = backup_record_create(schema_name=tenant.schema_name, tenant=tenant)
    assert record.tenant_uid == uid and record.storage_key.startswith(f"{tenant.schema_name}/{uid}/")
    get_tenant_model().objects.filter(pk=tenant.pk).delete()
    record.refresh_from_db()
    assert record.tenant_id is None and record.tenant_uid == uid and record.tenant_deleted_at is not None
    BackupRecord.objects.filter(pk=record.pk).delete()


from tests.integration.conftest import fake_tenants  # noqa: E402, F401 - fixture
