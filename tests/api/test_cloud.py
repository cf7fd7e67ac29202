"""cloud/ endpoints on the loopback S3 server, key injection, and the local backend's signed links."""

from __future__ import annotations

import hashlib
import json
import time
import uuid

import pytest
import requests
from django.core import signing
from django_tenants.utils import schema_context
from rest_framework.authtoken.models import Token

from accounts.models import User
from backups.api.tokens import link_binding_for
from backups.catalog.manifest import sign_manifest
from backups.models import BackupEvent, BackupRecord
from backups.storage import get_storage
from backups.storage.local import URL_SALT
from tests.identities import prefix

from .conftest import api_client, wait_for_status

OWN_NAME = "backup-sql-clinica_demo-2001-01-01-000000.sql.zst"
OWN_KEY = prefix("clinica_demo") + OWN_NAME
OTHER_KEY = prefix("clinica_sonrisa") + "backup-sql-clinica_sonrisa-2001-01-01-000000.sql.zst"
LOOKALIKE_KEY = prefix("clinica_demo2") + "backup-sql-clinica_demo2-2001-01-01-000000.sql.zst"  # starts like ours
LEGACY_KEY = "clinica_demo/" + OWN_NAME  # the schema alone, without an identity: nobody's
DELETED_KEY = f"clinica_demo/{uuid.UUID(int=7)}/" + OWN_NAME  # a deleted clinica_demo's
SECRET_NAMES = (b"clinica_sonrisa", b"clinica_demo2")


def _raw_keys(storage) -> list[tuple[str, int]]:
    """Everything in the bucket, every clinic, manifests included."""
    pages = storage.client.get_paginator("list_objects_v2").paginate(Bucket=storage.bucket)
    return sorted((o["Key"], o["Size"]) for page in pages for o in page.get("Contents", ()))


@pytest.mark.worker
def test_cloud_list_download_link_delete_on_s3(s3, admin, api_worker, cleanup):
    created = admin.post("/api/backups/create/", {}, format="json").json()
    record = wait_for_status(created["id"])
    assert record.status == BackupRecord.Status.SUCCEEDED and record.storage_backend == "s3", record.error
    storage = get_storage("s3")
    storage.put_bytes(OTHER_KEY, b"sonrisa's")
    storage.put_bytes(LOOKALIKE_KEY, b"someone else's")

    listed = admin.get("/api/backups/cloud/list/").json()
    assert listed["count"] == 1 and listed["schema"] == "clinica_demo"
    item = listed["backups"][0]
    assert item["filename"] == record.file_name and item["s3_key"] == record.storage_key
    assert item["size"] == record.size and item["storage_class"] == "STANDARD" and item["last_modified"]
    # the object and its manifest (the tenant's file blobs lie under <identity>/files/, listed by manifests)
    assert len([k for k, _ in _raw_keys(storage) if k.startswith("backups/clinica_demo/") and "/files/" not in k]) == 2

    download = admin.post("/api/backups/cloud/download/", {"s3_key": record.storage_key}, format="json")
    assert download.status_code == 200
    body = b"".join(download.streaming_content)
    assert hashlib.sha256(body).hexdigest() == download["X-Backup-SHA256"] == record.sha256
    history = admin.get(f"/api/backups/history/{record.pk}/download/")
    assert b"".join(history.streaming_content) == body

    link = admin.post("/api/backups/cloud/get-url/", {"s3_key": record.storage_key, "expiration": 120},
                      format="json").json()
    assert link["expires_in_seconds"] == 120 and link["filename"] == record.file_name
    assert link["download_url"].startswith(s3.endpoint_url + "/")
    fetched = requests.get(link["download_url"], timeout=30)
    assert fetched.status_code == 200 and fetched.content == body
    for expiration in (0, -5, 7 * 24 * 3600 + 1, "soon", 1.5):
        bad = admin.post("/api/backups/cloud/get-url/", {"s3_key": record.storage_key, "expiration": expiration},
                         format="json")
        assert bad.status_code == 400, (expiration, bad.content)
        assert "expiration" in bad.json()

    deleted = admin.delete("/api/backups/cloud/delete/", {"s3_key": record.storage_key}, format="json")
    assert deleted.status_code == 200, deleted.content
    assert deleted.json()["record_deleted"] is True
    assert not BackupRecord.objects.filter(pk=record.pk).exists()
    assert [k for k, _ in _raw_keys(storage) if k.startswith("backups/clinica_demo/") and "/files/" not in k] == []
    assert admin.get("/api/backups/cloud/list/").json()["count"] == 0
    again = admin.delete("/api/backups/cloud/delete/", {"s3_key": record.storage_key}, format="json")
    assert again.status_code == 404
    assert storage.stat(OTHER_KEY) is not None and storage.stat(LOOKALIKE_KEY) is not None


def test_an_object_without_record_is_listed_downloaded_and_deleted(s3, admin):
    storage = get_storage("s3")
    storage.put_bytes(OWN_KEY, b"an orphan object")
    storage.put_bytes(OWN_KEY + ".manifest.json", json.dumps(
        {"sha256": hashlib.sha256(b"an orphan object").hexdigest(), "size": 16}).encode())
    unsigned = admin.post("/api/backups/cloud/download/", {"s3_key": OWN_KEY}, format="json")
    assert "X-Backup-SHA256" not in unsigned  # a manifest this deployment did not sign is not believed
    b"".join(unsigned.streaming_content)
    storage.put_bytes(OWN_KEY + ".manifest.json", json.dumps(sign_manifest(
        {"sha256": hashlib.sha256(b"an orphan object").hexdigest(), "size": 16})).encode())
    assert [b["s3_key"] for b in admin.get("/api/backups/cloud/list/").json()["backups"]] == [OWN_KEY]
    download = admin.post("/api/backups/cloud/download/", {"s3_key": OWN_KEY}, format="json")
    assert b"".join(download.streaming_content) == b"an orphan object"
    assert download["X-Backup-SHA256"] == hashlib.sha256(b"an orphan object").hexdigest()  # from the manifest
    # percent-encoded keys are decoded once, the way clients may send them
    deleted = admin.delete("/api/backups/cloud/delete/", {"s3_key": OWN_KEY.replace("/", "%2F")}, format="json")
    assert deleted.status_code == 200 and deleted.json()["record_deleted"] is False
    assert _raw_keys(storage) == []
    event = BackupEvent.objects.filter(schema_name="clinica_demo", action="delete").order_by("-pk")[0]
    assert event.details["storage_key"] == OWN_KEY and event.record is None and event.actor["id"] == 1


@pytest.mark.radosgw
def test_cloud_link_cannot_be_edited_into_another_tenants_and_expires(s3, admin):
    """The S3 server checks the link's signature and its life: the tenant boundary holds outside the API too."""
    storage = get_storage("s3")
    storage.put_bytes(OWN_KEY, b"demo's backup")
    storage.put_bytes(OTHER_KEY, b"sonrisa's backup")
    link = admin.post("/api/backups/cloud/get-url/", {"s3_key": OWN_KEY, "expiration": 2}, format="json").json()
    url = link["download_url"]
    edited = url.replace(OWN_KEY.replace("/", "%2F"), OTHER_KEY.replace("/", "%2F")).replace(OWN_KEY, OTHER_KEY)
    assert edited != url
    refused = requests.get(edited, timeout=10)
    assert refused.status_code == 403 and b"sonrisa" not in refused.content
    assert requests.get(url, timeout=10).content == b"demo's backup"
    time.sleep(3.5)
    expired = requests.get(url, timeout=10)
    assert expired.status_code == 403 and b"demo" not in expired.content


INJECTIONS = [
    ("../clinica_sonrisa/backup-sql-clinica_sonrisa-2001-01-01-000000.sql.zst", 400),
    ("clinica_demo/../" + OTHER_KEY, 400),
    ("clinica_demo/../../etc/passwd", 400),
    ("%2e%2e%2f" + OTHER_KEY, 400),
    ("clinica_demo%2f..%2f" + OTHER_KEY.replace("/", "%2f"), 400),
    ("clinica_demo/%2e%2e/" + OTHER_KEY, 400),
    ("clinica_demo/%252e%252e%252f" + OTHER_KEY, 400),  # encoded twice
    ("/" + OWN_KEY, 400),
    ("/etc/passwd", 400),
    ("backups/" + OWN_KEY, 404),  # the bucket's own prefix is the server's business
    (prefix("clinica_demo") + "/" + OWN_NAME, 400),
    (prefix("clinica_demo") + "./" + OWN_NAME, 400),
    ("clinica_demo/", 400),
    ("clinica_demo", 404),
    ("clinica_dem/x.sql", 404),
    (OTHER_KEY, 404),
    (LOOKALIKE_KEY, 404),
    (OWN_KEY.replace("clinica_demo/", "CLINICA_DEMO/", 1), 404),
    (prefix("clinica_demo") + "sub/" + OWN_NAME, 404),
    (LEGACY_KEY, 404),
    (DELETED_KEY, 404),
    (OWN_KEY + ".manifest.json", 404),
    ("clinica_demo/.partial-x", 404),
    ("clinica_demo/" + "a" * 1100, 400),
    ("a" * 5000, 400),
    ("clinica_demo/a\x00b", 400),
    ("clinica_demo/a%00b", 400),
    ("clinica_demo/%ff%fe.sql", 400),  # not UTF-8 once decoded
    ("clinica_demo/\udcff.sql", 400),  # a lone surrogate (JSON "\udcff")
    ("clinica_demo\\..\\clinica_sonrisa\\x", 400),
    ("clinica_demo/a\nb", 400),
    ("", 400),
    (None, 400),
    (["clinica_demo"], 400),
    ({"key": OWN_KEY}, 400),
]
CLOUD = [("post", "/api/backups/cloud/download/"), ("delete", "/api/backups/cloud/delete/"),
         ("post", "/api/backups/cloud/get-url/")]


class CountingStorage:
    """get_storage() spy: the views must not reach the storage for a refused key."""

    calls = 0

    def __init__(self, real):
        self.real = real

    def __getattr__(self, name):
        CountingStorage.calls += 1
        return getattr(self.real, name)


@pytest.mark.parametrize(("key", "status"), INJECTIONS, ids=[repr(k)[:40] for k, _ in INJECTIONS])
def test_key_injection_is_refused_before_any_storage_call(key, status, s3, admin, monkeypatch):
    import backups.api.services.cloud as services
    import backups.api.views.cloud as views

    storage = get_storage("s3")
    for k in (OWN_KEY, OTHER_KEY, LOOKALIKE_KEY):
        storage.put_bytes(k, b"x" * 10)
    before = _raw_keys(storage)
    real_get_storage = views.get_storage
    monkeypatch.setattr(views, "get_storage", lambda *a: CountingStorage(real_get_storage(*a)))
    monkeypatch.setattr(services, "get_storage", lambda *a: CountingStorage(real_get_storage(*a)))
    CountingStorage.calls = 0
    for method, url in CLOUD:
        body = json.dumps({"s3_key": key, "expiration": 60})  # ensure_ascii: a surrogate goes as \udcff
        response = getattr(admin, method)(url, body, content_type="application/json")
        assert response.status_code == status, (method, url, key, response.status_code, response.content)
        assert response["Content-Type"] == "application/json"
        assert not any(name in response.content for name in SECRET_NAMES), response.content
    assert CountingStorage.calls == 0
    assert _raw_keys(storage) == before


def test_bodies_that_are_not_objects_are_400(admin):
    for method, url in CLOUD:
        for raw in ("[]", '"clinica_demo/x"', "42", "{", "null", b'{"s3_key": "clinica_demo/\xff\xfe.sql"}'):
            response = getattr(admin, method)(url, raw, content_type="application/json")
            assert response.status_code == 400, (url, raw, response.content)


# --- the local backend's signed links ------------------------------------------------------------------------

def _token(key: str, expires_at: float, bound: dict | None = None) -> str:
    return signing.dumps({"k": key, "e": int(expires_at), **({"b": bound} if bound else {})}, salt=URL_SALT)


def _minted_by_the_admin(schema: str) -> dict:
    """What a link the clinic's admin mints with their DRF token is bound to."""
    with schema_context(schema):
        admin = User.objects.get(username=f"admin@{schema}")
        return link_binding_for(admin, Token.objects.get_or_create(user=admin)[0])


def test_signed_links_are_bound_to_their_clinic_and_expire(creds):
    storage = get_storage("local")
    storage.put_bytes(OWN_KEY, b"demo's object")
    storage.put_bytes(OTHER_KEY, b"sonrisa's object")
    try:
        demo, sonrisa = api_client("clinica_demo"), api_client("clinica_sonrisa")
        bound = _minted_by_the_admin("clinica_demo")
        good = _token(OWN_KEY, time.time() + 60, bound)
        assert b"".join(demo.get(f"/api/backups/local-download/{good}/").streaming_content) == b"demo's object"
        assert sonrisa.get(f"/api/backups/local-download/{good}/").status_code == 404  # demo's link elsewhere
        other = _token(OTHER_KEY, time.time() + 60, bound)
        assert demo.get(f"/api/backups/local-download/{other}/").status_code == 404
        for token in (_token(OWN_KEY, time.time() - 1, bound),
                      _token(OWN_KEY, time.time() + 60),  # minted by nobody: nothing could end it
                      good[:-2] + ("AA" if not good.endswith("AA") else "BB"),
                      "garbage", signing.dumps({"k": OWN_KEY}, salt=URL_SALT),
                      signing.dumps({"k": "../../etc/passwd", "e": time.time() + 60}, salt=URL_SALT),
                      signing.dumps({"k": OWN_KEY, "e": time.time() + 60}, salt="another-salt")):
            response = demo.get(f"/api/backups/local-download/{token}/")
            assert response.status_code == 404, token
            assert response.json()["detail"]
    finally:
        storage.delete(OWN_KEY)
        storage.delete(OTHER_KEY)
