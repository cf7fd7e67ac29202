"""BACKUPS_API_COMPAT=1: a client written from the source documents, played against a live server and the real
worker, with both of their auth styles, on the local folder and on S3.

The client below knows only what the documents say: the endpoints, the headers, the fields it reads. Every
answer it gets is checked field by field, as their frontends read them.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
import zstandard
from django.test.testcases import LiveServerThread

from backups.api.services.plain import api_plain_chunks, api_plain_open, plain_file_name
from backups.catalog.records import backup_record_create, backup_record_mark_succeeded
from backups.core.errors import VerificationFailed
from backups.models import BackupRecord
from backups.storage import get_storage

pytestmark = pytest.mark.worker
DOCUMENTED_ITEM = {"id", "file_name", "file_size", "file_size_mb", "backup_type", "created_by", "created_at"}
DOCUMENTED_CLOUD = {"filename", "s3_key", "size", "last_modified", "storage_class", "url"}


@pytest.fixture(scope="module")
def live_server_port(django_db_setup, django_db_blocker) -> Iterator[int]:  # noqa: F811
    """Django's live server thread on a free loopback port (this process's settings, so overrides apply)."""
    thread = LiveServerThread("127.0.0.1", lambda handler: handler, port=0)  # no static files
    thread.daemon = True
    thread.start()
    thread.is_ready.wait(timeout=30)
    if thread.error:
        raise thread.error
    try:
        yield thread.port
    finally:
        with django_db_blocker.unblock():
            thread.terminate()


@pytest.fixture
def compat(settings):
    settings.BACKUPS_API_COMPAT = True
    settings.BACKUPS_SYNC_WAIT_SECONDS = 90  # a loaded CI machine: the documents' create waits for the worker
    settings.BACKUPS_API_COMPAT_HISTORY_LIMIT = 2
    return settings


class DocumentsClient:
    """What a clinic's frontend does, as written from the documents: calls and fields, nothing else."""

    def __init__(self, port: int, host: str, authorization: str) -> None:
        self.port, self.host = port, f"{host}:{port}"
        self.headers = {"Host": self.host, "Authorization": authorization}
        self.base = f"http://127.0.0.1:{port}/api/backups/"

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, self.base + path, headers=self.headers, timeout=120, **kwargs)

    def fetch_link(self, url: str) -> bytes:
        """A time-limited link, with no credentials (a link to this domain goes to the live server)."""
        parts = urlsplit(url)
        if parts.netloc == self.host:
            url = urlunsplit(parts._replace(netloc=f"127.0.0.1:{self.port}"))
            response = requests.get(url, headers={"Host": self.host}, timeout=60)
        else:
            response = requests.get(url, timeout=60)
        assert response.status_code == 200, response.text[:300]
        return response.content


def _check_item(item: dict, *, created_by: bool = True) -> None:
    assert DOCUMENTED_ITEM <= set(item), item
    assert isinstance(item["file_size"], int) and item["file_size"] > 0
    assert item["file_size_mb"] == round(item["file_size"] / (1 << 20), 2)
    assert item["backup_type"] in ("manual", "automatic")
    if created_by:
        assert item["created_by"] == {"id": 1, "email": "admin@clinica_demo.example", "nombre": "Dra. Núñez"}


def _play(client: DocumentsClient, storage_name: str) -> None:
    """Every documented call, in the order a frontend makes them."""
    first = client.call("POST", "create/")
    assert first.status_code == 201, first.text[:500]
    body = first.json()
    assert isinstance(body["message"], str) and body["message"]
    info = body["backup_info"]
    _check_item(info)
    assert info["backup_type"] == "manual" and info["file_name"].startswith("backup-sql-clinica_demo-")
    record = BackupRecord.objects.get(pk=info["id"])
    assert record.status == "succeeded" and record.storage_backend == storage_name and info["file_size"] == record.size

    # right after: the first has finished, so no 409; the dump itself, plain SQL, checked as it streamed
    plain = client.call("POST", "create/?download=true", stream=True)
    assert plain.status_code == 200, plain.text[:500]
    data = plain.content
    name = plain.headers["Content-Disposition"]
    assert name.startswith('attachment; filename="backup-sql-clinica_demo-') and name.endswith('.sql"'), name
    assert b"PostgreSQL database dump" in data[:4096] and b"CREATE TABLE" in data
    downloaded = BackupRecord.objects.filter(schema_name="clinica_demo").order_by("-pk").first()
    assert hashlib.sha256(data).hexdigest() == downloaded.plain_sha256 and len(data) == downloaded.plain_size

    cloud = client.call("POST", "create/?cloud_only=true")
    assert cloud.status_code == 201, cloud.text[:500]
    cinfo = cloud.json()["backup_info"]
    _check_item(cinfo)
    assert {"filename", "s3_key", "size", "bucket", "url"} <= set(cinfo)
    assert cinfo["size"] == cinfo["file_size"] and cinfo["filename"] == cinfo["file_name"]
    assert cinfo["bucket"] == ("tenant-backups-api-test" if storage_name == "s3" else "")
    stored = client.fetch_link(cinfo["url"])
    assert hashlib.sha256(stored).hexdigest() == BackupRecord.objects.get(pk=cinfo["id"]).sha256

    history = client.call("GET", "history/")
    assert history.status_code == 200
    items = history.json()
    assert isinstance(items, list) and len(items) == 2  # BACKUPS_API_COMPAT_HISTORY_LIMIT
    assert [i["id"] for i in items] == [cinfo["id"], downloaded.pk]  # newest first
    for item in items:
        _check_item(item)

    got = client.call("GET", f"history/{info['id']}/download/")
    assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == record.sha256

    listed = client.call("GET", "cloud/list/")
    assert listed.status_code == 200, listed.text[:300]
    lbody = listed.json()
    assert {"count", "schema", "backups"} <= set(lbody) and lbody["schema"] == "clinica_demo"
    assert lbody["count"] == len(lbody["backups"]) >= 3
    by_key = {b["s3_key"]: b for b in lbody["backups"]}
    for item in lbody["backups"]:
        assert DOCUMENTED_CLOUD <= set(item), item
    mine = by_key[cinfo["s3_key"]]
    assert mine["size"] == cinfo["size"] and client.fetch_link(mine["url"]) == stored

    for path in ("cloud/download/", "cloud/get-url/"):
        link = client.call("POST", path, json={"s3_key": cinfo["s3_key"]})
        assert link.status_code == 200, (path, link.text[:300])
        ldata = link.json()
        assert ldata["s3_key"] == cinfo["s3_key"] and ldata["expires_in_seconds"] == 3600
        assert ldata["filename"] == cinfo["filename"] and client.fetch_link(ldata["download_url"]) == stored

    deleted = client.call("DELETE", f"history/{info['id']}/")
    assert deleted.status_code == 200 and isinstance(deleted.json()["message"], str)
    gone = client.call("DELETE", "cloud/delete/", json={"s3_key": cinfo["s3_key"]})
    assert gone.status_code == 200 and gone.json()["s3_key"] == cinfo["s3_key"] and gone.json()["message"]
    assert client.call("GET", f"history/{cinfo['id']}/").status_code == 404


def test_a_documents_client_with_a_jwt_on_the_local_folder(compat, live_server_port, creds, api_worker, cleanup):
    client = DocumentsClient(live_server_port, "demo.localhost", f"Bearer {creds['clinica_demo'].admin_jwt}")
    _play(client, "local")


def test_a_documents_client_with_a_drf_token_on_s3(compat, s3, live_server_port, creds, api_worker, cleanup):
    client = DocumentsClient(live_server_port, "demo.localhost", f"Token {creds['clinica_demo'].admin_token}")
    _play(client, "s3")


def test_a_backup_not_done_in_time_answers_202_with_the_same_shape_and_its_status(compat, admin, api_worker,
                                                                                 cleanup):
    compat.BACKUPS_SYNC_WAIT_SECONDS = 0
    response = admin.post("/api/backups/create/", {}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] in ("queued", "running") and body["message"]
    assert body["backup_info"]["id"] and body["backup_info"]["file_size"] is None
    assert body["backup_info"]["created_by"]["nombre"] == "Dra. Núñez"


@pytest.fixture
def stored_plain(cleanup) -> Iterator[tuple[BackupRecord, bytes]]:
    """A succeeded zstd record of clinica_demo on the local folder whose plain bytes are known."""
    from django_tenants.utils import get_tenant_model

    tenant = get_tenant_model().objects.get(schema_name="clinica_demo")
    record = backup_record_create(schema_name="clinica_demo", tenant=tenant, fmt="json", compression="zstd")
    plain = b"".join(b'{"model": "x", "pk": %d}\n' % i for i in range(50000))
    stored = zstandard.ZstdCompressor().compress(plain)
    get_storage("local").put_bytes(record.storage_key, stored)
    record = backup_record_mark_succeeded(record=record, size=len(stored), sha256=hashlib.sha256(stored).hexdigest(),
                                          plain_size=len(plain), plain_sha256=hashlib.sha256(plain).hexdigest(),
                                          manifest={})
    yield record, plain


def test_the_plain_download_is_named_as_the_documents_and_refuses_a_damaged_object(stored_plain):
    record, plain = stored_plain
    assert plain_file_name(record) == record.file_name.removesuffix(".jsonl.zst") + ".json"
    storage = get_storage("local")
    out = io.BytesIO()
    for chunk in api_plain_chunks(api_plain_open(record=record, storage=storage), chunk_size=4096):
        out.write(chunk)
    assert out.getvalue() == plain

    stored = bytearray(storage.get_bytes(record.storage_key))
    stored[-3] ^= 0xFF  # one flipped byte near the end of the stored object
    storage.delete(record.storage_key)
    storage.put_bytes(record.storage_key, bytes(stored))
    sent = []
    with pytest.raises(VerificationFailed):
        for chunk in api_plain_chunks(api_plain_open(record=record, storage=storage), chunk_size=4096):
            sent.append(chunk)
    assert sum(map(len, sent)) < len(plain)  # the last chunk never went out
    record.refresh_from_db()
    assert record.damaged_at is not None
