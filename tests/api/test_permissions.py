"""The permission matrix: every endpoint x who asks x whose object, on clinica_demo's domain.

Who asks: nobody, a clinic user without the admin role (a dentist), the clinic's admin, another
clinic's admin with that clinic's DRF token, and another clinic's admin with a JWT issued there.
Whose object: clinica_demo's own, or clinica_sonrisa's (by id or key). Another clinic's objects must
look exactly like missing ones (404, never 403), and no answer may name the other clinic.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django_tenants.utils import get_tenant_model, schema_context
from rest_framework.authtoken.models import Token

from accounts.models import User
from backups.api.tokens import link_binding_for
from backups.backup.run import backup_run
from backups.catalog.records import backup_record_create
from backups.models import BackupRecord, RestoreJob
from backups.storage import get_storage
from tests.identities import prefix

from .conftest import api_client

OWN, OTHER = "clinica_demo", "clinica_sonrisa"


@dataclass
class Objects:
    """One clinic's objects the matrix points at."""

    record: BackupRecord
    job: RestoreJob
    link_path: str


def _objects(schema: str) -> Objects:
    tenant = get_tenant_model().objects.get(schema_name=schema)
    record = backup_run(record_id=backup_record_create(schema_name=schema, tenant=tenant).pk)
    assert record.status == BackupRecord.Status.SUCCEEDED, record.error
    job = RestoreJob.objects.create(tenant=tenant, tenant_uid=tenant.tenant_uid, schema_name=schema, record=record,
                                    mode="verify",
                                    status="succeeded")
    with schema_context(schema):  # minted as the clinic's admin mints it through cloud/get-url/
        admin = User.objects.get(username=f"admin@{schema}")
        bound = link_binding_for(admin, Token.objects.get_or_create(user=admin)[0])
    link = get_storage("local").url(record.storage_key, 600, bound=bound)
    return Objects(record, job, link)


@pytest.fixture(scope="module")
def objects(django_db_setup, django_db_blocker) -> Iterator[dict[str, Objects]]:  # noqa: F811
    """A succeeded backup (with its signed link) and a restore job of each of the two clinics."""
    with django_db_blocker.unblock():
        made = {schema: _objects(schema) for schema in (OWN, OTHER)}
        yield made
        local = get_storage("local")
        for objs in made.values():
            local.delete(objs.record.storage_key)
            local.delete(objs.record.storage_key + ".manifest.json")
            objs.job.delete()
            objs.record.delete()


def _failed_record(schema: str) -> BackupRecord:
    record = backup_record_create(schema_name=schema, tenant=get_tenant_model().objects.get(schema_name=schema))
    BackupRecord.objects.filter(pk=record.pk).update(status=BackupRecord.Status.FAILED)
    return record


def _disposable_object(schema: str) -> str:
    key = prefix(schema) + f"backup-sql-{schema}-2001-01-01-000000-matrix.sql.zst"
    get_storage("local").delete(key)
    get_storage("local").put_bytes(key, b"not really a backup")
    return key


def _current_schedule(creds) -> dict:
    data = api_client(OWN, f"Token {creds[OWN].admin_token}").get("/api/backups/schedule/").json()
    return {k: v for k, v in data.items() if k not in ("next_backup_at", "last_backup_at")}


# endpoint -> (method, url template, body, needs an object, admin only, admin's status on its own object)
ENDPOINTS = {
    "create": ("post", "/api/backups/create/?cloud_only=true", {}, False, True, 202),
    "history-list": ("get", "/api/backups/history/", None, False, False, 200),
    "history-detail": ("get", "/api/backups/history/{record}/", None, True, False, 200),
    "history-delete": ("delete", "/api/backups/history/{disposable_record}/", None, True, True, 200),
    "history-download": ("get", "/api/backups/history/{record}/download/", None, True, True, 200),
    "history-files": ("get", "/api/backups/history/{record}/files/", None, True, True, 200),
    "history-restore": ("post", "/api/backups/history/{failed_record}/restore/", {"confirm": OWN}, True, True, 409),
    "history-verify": ("post", "/api/backups/history/{failed_record}/verify/", {"confirm": OWN}, True, True, 409),
    "history-restore-objects": ("post", "/api/backups/history/{failed_record}/restore-objects/",
                                {"model": "clinic.Patient", "pks": [1]}, True, True, 409),
    "restore-detail": ("get", "/api/backups/restores/{job}/", None, True, True, 200),
    "cloud-list": ("get", "/api/backups/cloud/list/", None, False, True, 200),
    "cloud-download": ("post", "/api/backups/cloud/download/", {"s3_key": "{key}"}, True, True, 200),
    "cloud-delete": ("delete", "/api/backups/cloud/delete/", {"s3_key": "{disposable_key}"}, True, True, 200),
    "cloud-get-url": ("post", "/api/backups/cloud/get-url/", {"s3_key": "{key}"}, True, True, 200),
    "schedule-get": ("get", "/api/backups/schedule/", None, False, False, 200),
    "schedule-put": ("put", "/api/backups/schedule/", "{schedule}", False, True, 200),
    "schedule-patch": ("patch", "/api/backups/schedule/", {}, False, True, 200),
    "audit": ("get", "/api/backups/audit/", None, False, True, 200),
    "local-download": ("get", "{link}", None, True, False, 200),
}
PRINCIPALS = ("anonymous", "dentist", "admin", "other_clinic_token", "other_clinic_jwt")
CASES = [(endpoint, who, whose) for endpoint, spec in ENDPOINTS.items() for who in PRINCIPALS
         for whose in ((OWN, OTHER) if spec[3] else (OWN,))]


def expected_status(endpoint: str, who: str, whose: str) -> int:
    _, _, _, needs_object, admin_only, admin_own = ENDPOINTS[endpoint]
    if endpoint == "local-download":  # no credentials at all: the link's signature decides
        return 200 if whose == OWN else 404
    if who in ("anonymous", "other_clinic_token", "other_clinic_jwt"):
        return 401
    if who == "dentist" and admin_only:
        return 403
    if needs_object and whose == OTHER:
        return 404
    return admin_own


def _authorization(who: str, creds) -> str | None:
    return {
        "anonymous": None,
        "dentist": f"Token {creds[OWN].dentist_token}",
        "admin": f"Token {creds[OWN].admin_token}",
        "other_clinic_token": f"Token {creds[OTHER].admin_token}",
        "other_clinic_jwt": f"Bearer {creds[OTHER].admin_jwt}",
    }[who]


def _fill(template, values: dict):
    if isinstance(template, str):
        if template == "{schedule}":
            return values["schedule"]
        return template.format(**values)
    if isinstance(template, dict):
        return {k: _fill(v, values) for k, v in template.items()}
    return template


@pytest.mark.parametrize(("endpoint", "who", "whose"), CASES, ids=["-".join(c) for c in CASES])
def test_matrix(endpoint, who, whose, creds, objects, api_worker, cleanup):
    method, url, body, needs_object, _, _ = ENDPOINTS[endpoint]
    target = objects[whose]
    values = {
        "record": target.record.pk, "job": target.job.pk, "link": target.link_path,
        "key": target.record.storage_key,
        "failed_record": _failed_record(whose).pk if "failed_record" in url else 0,
        "disposable_record": _failed_record(whose).pk if "disposable_record" in url else 0,
        "disposable_key": _disposable_object(whose) if "disposable_key" in str(body) else "",
        "schedule": _current_schedule(creds) if endpoint == "schedule-put" else {},
    }
    client = api_client(OWN, _authorization(who, creds))
    response = getattr(client, method)(_fill(url, values), _fill(body, values), format="json")
    content = b"".join(response.streaming_content) if response.streaming else response.content
    expected = expected_status(endpoint, who, whose)
    assert response.status_code == expected, (endpoint, who, whose, response.status_code, content[:300])
    assert b"clinica_sonrisa" not in content and OTHER.encode() not in content
    if expected == 401:
        assert response["WWW-Authenticate"]
    if response.status_code >= 400:
        assert response["Content-Type"] == "application/json" and b'"detail"' in content
    if endpoint == "cloud-delete":
        still_there = get_storage("local").stat(values["disposable_key"]) is not None
        assert still_there == (response.status_code != 200)  # untouched unless deleted by its own admin
        get_storage("local").delete(values["disposable_key"])
    if endpoint == "history-delete":
        still_there = BackupRecord.objects.filter(pk=values["disposable_record"]).exists()
        assert still_there == (response.status_code != 200)
        BackupRecord.objects.filter(pk=values["disposable_record"]).delete()
