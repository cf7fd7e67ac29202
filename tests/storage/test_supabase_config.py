"""Supabase-only behaviour: the standard upload without S3 credentials, check() messages, the bucket, links, errors.

The conformance suite (test_conformance.py) already runs every shared behaviour on Supabase with S3 credentials.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import jwt as pyjwt
import pytest
import requests

from backups.storage import get_storage
from backups.storage.base import ObjectNotFound, StorageError, StorageTransientError
from backups.storage.supabase import (
    BUCKET_LIMIT_MESSAGE,
    SIZE_LIMIT_MESSAGE,
    UPLOAD_LIMIT_MESSAGE,
    SupabaseStorage,
    check_key,
)
from tests.servers.moto_s3 import free_port
from tests.servers.supabase_storage import stop

from .conftest import (
    SUPABASE_JWT_SECRET,
    SUPABASE_S3_ACCESS_KEY,
    SUPABASE_S3_SECRET_KEY,
    SUPABASE_SERVICE_KEY,
    SupabaseServer,
    count_list_requests,
    make_supabase_storage,
    s3_pending_uploads,
    start_supabase,
)

MiB = 1024 * 1024
SMALL_LIMIT = 2 * MiB  # the server's file size limit here, and the client's SUPABASE_UPLOAD_LIMIT


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SupabaseServer]:
    """A stand-in whose file size limit is 2 MiB."""
    server = start_supabase(tmp_path_factory.mktemp("supabase-small"), file_size_limit=SMALL_LIMIT)
    yield server
    stop(server.server)


def rest_storage(server: SupabaseServer, **overrides) -> SupabaseStorage:
    """No S3 credentials: writes take the standard upload, capped at 2 MiB unless overridden."""
    overrides.setdefault("upload_limit", SMALL_LIMIT)
    return make_supabase_storage(server, s3=False, **overrides)


def chunks(total: int, size: int) -> Iterator[bytes]:
    block = os.urandom(size)
    for index, offset in enumerate(range(0, total, size)):
        yield (index.to_bytes(8, "big") + block[8:])[: min(size, total - offset)]


def upload(storage, key: str, total: int, size: int = 256 * 1024) -> str:
    digest = hashlib.sha256()
    with storage.open_write(key) as writer:
        for data in chunks(total, size):
            digest.update(data)
            writer.write(data)
        writer.commit()
    return digest.hexdigest()


def wait_for_no_partial_files(server: SupabaseServer, timeout: float = 5) -> list[str]:
    """The stand-in's temporary upload files (bodies it has not committed), once it has cleaned up."""
    deadline = time.monotonic() + timeout
    while True:
        leftovers = os.listdir(server.data_dir / "tmp")
        if not leftovers or time.monotonic() > deadline:
            return leftovers
        time.sleep(0.05)


def record_requests(storage: SupabaseStorage) -> list[httpx.Request]:
    seen: list[httpx.Request] = []
    storage.http.event_hooks["request"].append(seen.append)
    return seen


def raw_get_bucket(server: SupabaseServer, bucket: str) -> httpx.Response:
    headers = {"apikey": SUPABASE_SERVICE_KEY, "Authorization": f"Bearer {SUPABASE_SERVICE_KEY}"}
    return httpx.get(f"{server.url}/storage/v1/bucket/{bucket}", headers=headers)


def raw_create_bucket(server: SupabaseServer, bucket: str, **options) -> None:
    headers = {"apikey": SUPABASE_SERVICE_KEY, "Authorization": f"Bearer {SUPABASE_SERVICE_KEY}"}
    response = httpx.post(f"{server.url}/storage/v1/bucket", headers=headers, json={"name": bucket, **options})
    assert response.status_code == 200, response.text


# -- writes without S3 credentials: the standard upload ----------------------------------------------


def test_small_object_round_trips_through_the_standard_upload(small_server):
    storage = rest_storage(small_server)
    seen = record_requests(storage)
    assert not storage.s3_enabled

    storage.put_bytes("clinic1/manifest.json", b'{"ok": true}')

    assert storage.get_bytes("clinic1/manifest.json") == b'{"ok": true}'
    assert storage.stat("clinic1/manifest.json").size == len(b'{"ok": true}')
    assert [obj.key for obj in storage.list("clinic1/")] == ["clinic1/manifest.json"]
    uploads = [r for r in seen if r.method == "POST" and r.url.path.endswith("/clinic1/manifest.json")]
    assert len(uploads) == 1 and uploads[0].url.path == f"/storage/v1/object/{storage.bucket}/clinic1/manifest.json"
    assert uploads[0].headers["x-upsert"] == "false"
    assert not any("/storage/v1/s3" in r.url.path for r in seen)
    assert storage._s3 is None  # the S3 client was never even built


def test_larger_object_is_streamed_as_a_chunked_body(small_server):
    storage = rest_storage(small_server)
    seen = record_requests(storage)

    sent = upload(storage, "clinic1/dump.sql.zst", 1536 * 1024)

    with storage.open_read("clinic1/dump.sql.zst") as stream:
        assert hashlib.sha256(stream.read()).hexdigest() == sent
    (post,) = [r for r in seen if r.method == "POST" and r.url.path.endswith("/clinic1/dump.sql.zst")]
    assert post.headers.get("transfer-encoding") == "chunked" and "content-length" not in post.headers


def test_object_of_exactly_the_limit_is_accepted(small_server):
    storage = rest_storage(small_server)
    upload(storage, "clinic1/edge.sql", SMALL_LIMIT)
    assert storage.stat("clinic1/edge.sql").size == SMALL_LIMIT


def test_object_over_the_upload_limit_fails_naming_the_s3_settings(small_server):
    storage = rest_storage(small_server)

    with pytest.raises(StorageError) as caught:
        upload(storage, "clinic1/big.sql", 3 * MiB, size=512 * 1024)

    assert str(caught.value) == UPLOAD_LIMIT_MESSAGE.format(key="clinic1/big.sql", limit=SMALL_LIMIT)
    assert "SUPABASE_UPLOAD_LIMIT (2097152 bytes)" in str(caught.value) and "SUPABASE_S3_ENDPOINT" in str(caught.value)
    assert not isinstance(caught.value, StorageTransientError)
    assert list(storage.list("clinic1/")) == []
    assert storage.stat("clinic1/big.sql") is None
    assert wait_for_no_partial_files(small_server) == []


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SupabaseServer]:
    """A stand-in whose project file size limit (100 kB) is below the one-POST threshold (1 MiB)."""
    server = start_supabase(tmp_path_factory.mktemp("supabase-tiny"), file_size_limit=100_000)
    yield server
    stop(server.server)


def test_the_servers_limit_guards_only_bodies_with_a_content_length(tiny_server):
    """Like storage-api, the stand-in refuses an oversized body only by its Content-Length: the one-POST upload
    (up to 1 MiB) gets its 413, read as the size-limit sentence; a streamed one is stored whatever its size, which
    is why the writer counts SUPABASE_UPLOAD_LIMIT itself."""
    storage = rest_storage(tiny_server, upload_limit=50 * MiB)

    with pytest.raises(StorageError) as caught:
        storage.put_bytes("clinic1/one-post.sql", b"x" * 500_000)
    assert str(caught.value) == SIZE_LIMIT_MESSAGE.format(action="uploading clinic1/one-post.sql")
    assert storage.stat("clinic1/one-post.sql") is None

    upload(storage, "clinic1/streamed.sql", 1536 * 1024)  # chunked, 15 times the project's limit
    assert storage.stat("clinic1/streamed.sql").size == 1536 * 1024


def test_the_buckets_own_limit_is_counted_by_the_writer(small_server):
    """The bucket's file_size_limit (read with the bucket) caps a streamed upload the server would store."""
    storage = rest_storage(small_server)
    raw_create_bucket(small_server, storage.bucket, file_size_limit=MiB + 100)
    seen = record_requests(storage)

    with pytest.raises(StorageError) as caught:
        upload(storage, "clinic1/big.sql", 1536 * 1024)

    assert str(caught.value) == BUCKET_LIMIT_MESSAGE.format(key="clinic1/big.sql", bucket=storage.bucket,
                                                           limit=MiB + 100)
    assert "SUPABASE_BUCKET" in str(caught.value)
    assert storage.stat("clinic1/big.sql") is None and wait_for_no_partial_files(small_server) == []
    assert not any(r.method == "POST" and r.url.path.endswith("/clinic1/big.sql") for r in seen)  # never sent
    upload(storage, "clinic1/fits.sql", MiB + 100)
    assert storage.stat("clinic1/fits.sql").size == MiB + 100


def test_abort_mid_stream_leaves_nothing(small_server):
    storage = rest_storage(small_server)
    writer = storage.open_write("clinic1/failed.sql")
    for data in chunks(1536 * 1024, 256 * 1024):
        writer.write(data)

    writer.abort()
    writer.abort()

    assert list(storage.list("clinic1/")) == []
    assert storage.stat("clinic1/failed.sql") is None
    assert wait_for_no_partial_files(small_server) == []
    with pytest.raises(StorageError, match="already finished"):
        writer.write(b"more")


@pytest.mark.parametrize("size", [100, 1536 * 1024], ids=["one-post", "streamed"])
def test_lost_answer_after_the_whole_body_removes_the_object(small_server, size):
    """The server stored the object but the answer never arrived: commit fails and removes it."""
    storage = rest_storage(small_server)
    real_send = storage.http.send

    def send_then_lose_answer(request, **kwargs):
        response = real_send(request, **kwargs)
        if request.method == "POST" and "/clinic1/lost.sql" in request.url.path:
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response

    storage.http.send = send_then_lose_answer

    with pytest.raises(StorageTransientError):
        upload(storage, "clinic1/lost.sql", size)

    assert storage.stat("clinic1/lost.sql") is None
    assert list(storage.list("clinic1/")) == []


def test_cleanup_after_a_lost_answer_spares_another_writers_object(small_server):
    storage = rest_storage(small_server)
    storage.put_bytes("clinic1/taken.sql", b"the first backup")
    real_send = storage.http.send

    def send_then_lose_answer(request, **kwargs):
        response = real_send(request, **kwargs)  # answers 409: the key is taken
        if request.method == "POST" and "/clinic1/taken.sql" in request.url.path:
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response

    storage.http.send = send_then_lose_answer
    with pytest.raises(StorageTransientError):
        storage.put_bytes("clinic1/taken.sql", b"a second backup")

    assert storage.get_bytes("clinic1/taken.sql") == b"the first backup"


def test_existing_object_is_not_overwritten(small_server):
    storage = rest_storage(small_server)
    storage.put_bytes("clinic1/once.sql", b"first")

    with pytest.raises(StorageError, match="already exists at clinic1/once.sql"):
        storage.put_bytes("clinic1/once.sql", b"second")

    assert storage.get_bytes("clinic1/once.sql") == b"first"


def test_standard_upload_memory_stays_bounded(supabase_server):
    """A 64 MiB stream through the standard upload holds a few MiB (the queue), not the object.

    tracemalloc also counts the in-process stand-in's buffers; the peak is the same (~10 MiB) at 32 or 96 MiB.
    """
    storage = rest_storage(supabase_server, upload_limit=128 * MiB)
    storage.check()
    tracemalloc.start()
    try:
        upload(storage, "clinic1/flat.sql", 64 * MiB, size=MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MiB, f"peak {peak / MiB:.1f} MiB"
    assert storage.stat("clinic1/flat.sql").size == 64 * MiB


# -- writes with S3 credentials ----------------------------------------------------------------------


def test_s3_writes_use_path_style_no_prefix_no_encryption(supabase_server):
    storage = make_supabase_storage(supabase_server)
    assert storage.s3_enabled
    s3 = storage.s3
    assert s3.key_prefix == "" and s3.sse == "" and s3.bucket == storage.bucket
    assert s3.client.meta.config.s3["addressing_style"] == "path"
    assert s3.endpoint_url == supabase_server.s3_endpoint
    assert s3.setting_names["credentials"] == "SUPABASE_S3_ACCESS_KEY_ID/SUPABASE_S3_SECRET_ACCESS_KEY"

    storage.put_bytes("clinic1/a.sql", b"through S3")

    head = s3.client.head_object(Bucket=storage.bucket, Key="clinic1/a.sql")  # <schema>/<file>, no prefix
    assert head["ContentLength"] == len(b"through S3") and "ServerSideEncryption" not in head


def test_s3_object_over_the_projects_limit_is_refused(supabase_server):
    storage = make_supabase_storage(supabase_server)
    raw_create_bucket(supabase_server, storage.bucket, file_size_limit=6 * MiB)

    with pytest.raises(StorageError, match="upload size limit"):
        upload(storage, "clinic1/big.sql", 12 * MiB, size=MiB)

    assert list(storage.list("clinic1/")) == []
    assert s3_pending_uploads(storage.s3) == []


# -- check() -----------------------------------------------------------------------------------------


def test_check_passes_and_creates_a_missing_private_bucket(supabase_server):
    storage = make_supabase_storage(supabase_server)
    assert raw_get_bucket(supabase_server, storage.bucket).status_code == 400  # {"statusCode": "404", ...}

    storage.check()
    storage.check()  # and again, once it exists

    response = raw_get_bucket(supabase_server, storage.bucket)
    assert response.status_code == 200 and response.json()["public"] is False


def test_first_write_creates_a_missing_bucket(small_server):
    storage = rest_storage(small_server)
    storage.put_bytes("clinic1/first.sql", b"x")
    assert raw_get_bucket(small_server, storage.bucket).json()["public"] is False


def test_check_refuses_a_public_bucket(supabase_server):
    storage = make_supabase_storage(supabase_server)
    raw_create_bucket(supabase_server, storage.bucket, public=True)

    with pytest.raises(StorageError, match="is public.*SUPABASE_BUCKET"):
        storage.check()
    with pytest.raises(StorageError, match="is public"):
        storage.open_write("clinic1/a.sql")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"url": ""}, "SUPABASE_URL is not set."),
        ({"key": ""}, "SUPABASE_KEY is not set."),
        ({"bucket": ""}, "SUPABASE_BUCKET is not set."),
    ],
)
def test_check_names_a_missing_setting(supabase_server, overrides, message):
    storage = make_supabase_storage(supabase_server, **overrides)
    with pytest.raises(StorageError) as caught:
        storage.check()
    assert str(caught.value) == message
    with pytest.raises(StorageError, match=message):
        storage.open_write("clinic1/a.sql")


@pytest.mark.parametrize("url", ["myproject.supabase.co", "ftp://myproject.supabase.co"])
def test_check_refuses_a_malformed_url(supabase_server, url):
    with pytest.raises(StorageError, match="SUPABASE_URL"):
        make_supabase_storage(supabase_server, url=url).check()


def test_check_refuses_the_storage_endpoint_as_url(supabase_server):
    storage = make_supabase_storage(supabase_server, url=f"{supabase_server.url}/storage/v1")
    with pytest.raises(StorageError, match="SUPABASE_URL must be the project URL"):
        storage.check()


def test_check_with_unreachable_url(supabase_server):
    storage = make_supabase_storage(supabase_server, url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StorageTransientError) as caught:
        storage.check()
    assert "SUPABASE_URL" in str(caught.value) and "SUPABASE_KEY" not in str(caught.value)


def test_check_with_something_else_at_the_url(supabase_server):
    """The S3 side at SUPABASE_URL answers a Bearer request 403 AccessDenied "Missing signature" in XML: the URL is
    wrong, not the key."""
    storage = make_supabase_storage(supabase_server, url=f"{supabase_server.url}/storage/v1/s3/x")
    with pytest.raises(StorageError, match="SUPABASE_URL") as caught:
        storage.check()
    assert "SUPABASE_KEY" not in str(caught.value) and "HTTP 403" in str(caught.value)


def test_check_with_wrong_key(supabase_server):
    storage = make_supabase_storage(supabase_server, key="sb_secret_not-the-right-key")
    with pytest.raises(StorageError) as caught:
        storage.check()
    assert "SUPABASE_KEY" in str(caught.value) and not isinstance(caught.value, StorageTransientError)


def test_check_with_an_apikey_but_a_bad_bearer_token(supabase_server, monkeypatch):
    """An accepted apikey with a token Storage refuses (403 `Invalid Compact JWS`): still SUPABASE_KEY."""
    storage = make_supabase_storage(supabase_server)
    monkeypatch.setattr(SupabaseStorage, "auth_headers", property(
        lambda self: {"apikey": self.key, "Authorization": "Bearer not-a-jwt"}
    ))
    with pytest.raises(StorageError, match="SUPABASE_KEY must be the project's service_role key") as caught:
        storage.check()
    assert "could not read SUPABASE_KEY as a JWT" in str(caught.value) and "Invalid Compact JWS" in str(caught.value)


@pytest.mark.parametrize("missing", ["s3_endpoint", "s3_access_key_id", "s3_secret_access_key"])
def test_check_refuses_partial_s3_settings(supabase_server, missing):
    storage = make_supabase_storage(supabase_server, **{missing: ""})
    name = {"s3_endpoint": "SUPABASE_S3_ENDPOINT", "s3_access_key_id": "SUPABASE_S3_ACCESS_KEY_ID",
            "s3_secret_access_key": "SUPABASE_S3_SECRET_ACCESS_KEY"}[missing]
    with pytest.raises(StorageError, match=f"^{name} is not set"):
        storage.check()
    with pytest.raises(StorageError, match=f"^{name} is not set"):
        storage.open_write("clinic1/a.sql")  # never silently falls back to the capped standard upload


def test_check_with_wrong_s3_secret(supabase_server):
    storage = make_supabase_storage(supabase_server, s3_secret_access_key="wrong")
    with pytest.raises(StorageError) as caught:
        storage.check()
    assert "SignatureDoesNotMatch" in str(caught.value) and "SUPABASE_S3_SECRET_ACCESS_KEY" in str(caught.value)
    assert "SUPABASE_S3_REGION='us-east-1'" in str(caught.value)


def test_check_with_wrong_s3_access_key_id(supabase_server):
    storage = make_supabase_storage(supabase_server, s3_access_key_id="nobody")
    with pytest.raises(StorageError) as caught:
        storage.check()
    assert "Invalid Access Key" in str(caught.value) and str(caught.value).endswith("check SUPABASE_S3_ACCESS_KEY_ID.")


@pytest.fixture(scope="module")
def regional_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SupabaseServer]:
    """A stand-in in region eu-central-1, like a hosted project's S3 endpoint."""
    server = start_supabase(tmp_path_factory.mktemp("supabase-eu"), s3_region="eu-central-1")
    yield server
    stop(server.server)


@pytest.mark.parametrize("region", ["eu-central-1", "us-east-1", "auto"])
def test_regions_supabase_signs_with_work(regional_server, region):
    storage = make_supabase_storage(regional_server, s3_region=region)
    storage.check()
    storage.put_bytes("clinic1/a.sql", b"signed for " + region.encode())
    assert storage.get_bytes("clinic1/a.sql") == b"signed for " + region.encode()


def test_check_with_wrong_s3_region_names_the_region(regional_server):
    """storage-api signs with its own region when the client's is not `auto`/`us-east-1`/its own: 403
    SignatureDoesNotMatch, which used to read as a wrong access key."""
    storage = make_supabase_storage(regional_server, s3_region="eu-west-3")
    with pytest.raises(StorageError) as caught:
        storage.check()
    assert "SignatureDoesNotMatch" in str(caught.value)
    assert "SUPABASE_S3_REGION='eu-west-3' must be the project's region" in str(caught.value)
    with pytest.raises(StorageError, match="SUPABASE_S3_REGION='eu-west-3'"):  # a write without check() too
        storage.put_bytes("clinic1/a.sql", b"x")


def test_check_with_an_expired_jwt_as_key(supabase_server, monkeypatch):
    """A legacy JWT service_role key past its `exp`: storage says `"exp" claim timestamp check failed`."""
    expired = pyjwt.encode({"role": "service_role", "exp": int(time.time()) - 60}, SUPABASE_JWT_SECRET)
    storage = make_supabase_storage(supabase_server)
    monkeypatch.setattr(SupabaseStorage, "auth_headers", property(
        lambda self: {"apikey": self.key, "Authorization": f"Bearer {expired}"}
    ))
    with pytest.raises(StorageError) as caught:
        storage.check()
    assert "SUPABASE_KEY while checking bucket" in str(caught.value) and "expired JWT" in str(caught.value)
    assert '"exp" claim timestamp check failed' in str(caught.value)


def test_check_with_unreachable_s3_endpoint(supabase_server):
    storage = make_supabase_storage(supabase_server, s3_endpoint=f"http://127.0.0.1:{free_port()}/storage/v1/s3",
                                    max_attempts=1)
    with pytest.raises(StorageTransientError, match="SUPABASE_S3_ENDPOINT"):
        storage.check()


def test_check_with_s3_endpoint_missing_its_path(supabase_server):
    storage = make_supabase_storage(supabase_server, s3_endpoint=f"{supabase_server.url}/storage/v1")
    with pytest.raises(StorageError, match="check SUPABASE_S3_ENDPOINT"):
        storage.check()


# -- reads, listings, links ----------------------------------------------------------------------------


def test_reads_from_a_missing_bucket_name_the_bucket_setting(supabase_server):
    storage = make_supabase_storage(supabase_server)  # its bucket was never created
    with pytest.raises(StorageError, match=r"does not exist \(SUPABASE_BUCKET\)") as caught:
        storage.stat("clinic1/a.sql")
    assert not isinstance(caught.value, ObjectNotFound)
    with pytest.raises(StorageError, match=r"\(SUPABASE_BUCKET\)"):
        storage.open_read("clinic1/a.sql")


def test_read_is_streamed(supabase_server):
    storage = make_supabase_storage(supabase_server)
    upload(storage, "clinic1/stream.sql", 6 * MiB, size=MiB)

    with storage.open_read("clinic1/stream.sql") as stream:
        first = stream.read(1000)
        assert len(first) == 1000
        assert stream._response.num_bytes_downloaded < 2 * MiB  # the rest is still on the wire
        rest = stream.read()
    assert len(first) + len(rest) == 6 * MiB


def test_listing_pages_and_walks_folders(small_server):
    storage = rest_storage(small_server, list_page_size=3)
    calls = count_list_requests(storage)
    keys = [f"clinic1/{i}.sql" for i in range(7)] + ["clinic10/a.sql", "clinic2/a.sql", "clinic1/sub/x.sql"]
    for key in keys:
        storage.put_bytes(key, b"x")

    assert sorted(o.key for o in storage.list("clinic1/")) == sorted(k for k in keys if k.startswith("clinic1/"))
    assert calls() >= 4  # three pages of clinic1/ and its sub/ folder
    assert sorted(o.key for o in storage.list("clinic1")) == sorted(k for k in keys if k.startswith("clinic1"))
    assert sorted(o.key for o in storage.list("")) == sorted(keys)
    assert [o.key for o in storage.list("clinic1/3")] == ["clinic1/3.sql"]
    assert list(storage.list("clinic3/")) == []
    # Supabase matches prefixes case-insensitively; keys here are compared exactly.
    assert list(storage.list("CLINIC1/")) == [] and list(storage.list("Clinic1/sub/")) == []
    assert list(storage.list("clinic1/SUB/")) == []


def test_expired_link_is_refused(supabase_server):
    storage = make_supabase_storage(supabase_server)
    storage.put_bytes("clinic1/link.sql", b"the backup bytes")
    link = storage.url("clinic1/link.sql", 1)
    assert link.startswith(f"{supabase_server.url}/storage/v1/object/sign/{storage.bucket}/clinic1/link.sql?token=")

    time.sleep(1.2)
    response = requests.get(link, timeout=10)

    assert response.status_code == 400
    assert response.json()["code"] == "InvalidJWT"
    assert response.json()["message"] == '"exp" claim timestamp check failed'  # jose's JWTExpired, as storage says
    tampered = link.replace("link.sql?", "other.sql?")
    assert requests.get(tampered, timeout=10).status_code == 400
    malformed = requests.get(link.split("?token=")[0] + "?token=not-a-token", timeout=10)
    assert (malformed.status_code, malformed.json()["message"]) == (400, "Invalid Compact JWS")


def test_link_to_a_missing_object(supabase_server):
    storage = make_supabase_storage(supabase_server)
    storage.check()
    with pytest.raises(ObjectNotFound):
        storage.url("clinic1/none.sql", 60)


def test_link_expiry_is_capped_by_setting(supabase_server):
    storage = make_supabase_storage(supabase_server, url_max_expiry=3600)
    storage.put_bytes("clinic1/link.sql", b"x")
    assert storage.url("clinic1/link.sql", 3600)
    with pytest.raises(ValueError, match="BACKUPS_URL_MAX_EXPIRY"):
        storage.url("clinic1/link.sql", 3601)
    with pytest.raises(ValueError, match="expires_in"):
        storage.url("clinic1/link.sql", True)


@pytest.mark.parametrize("key", ["clinic1/a%2F..%2Fb.sql", "clinic1/../x", "/clinic1/a.sql", "clinic1/", ""])
def test_bad_keys_are_refused_before_any_request(supabase_server, key):
    storage = make_supabase_storage(supabase_server)
    seen = record_requests(storage)
    for call in (storage.open_write, storage.open_read, storage.stat, storage.delete):
        with pytest.raises(StorageError, match="not a valid backup key"):
            call(key)
    assert seen == []


@pytest.mark.parametrize(("key", "refused"), [
    ("clinic1/caf\u00e9 cr\u00e8me.sql", "\u00e9\u00e8"), ("clinic1/\U0001f600.sql", "\U0001f600"),
    ("clinic1/a?b.sql", "?"), *((f"clinic1/a{c}b.sql", c) for c in '#[]~{}"^|<>`'),
])
def test_keys_supabase_refuses_are_refused_naming_the_characters(supabase_server, key, refused):
    """storage-api answers 400 InvalidKey for these (and `?` breaks its signed links): writes are refused with a
    sentence, and since no such object can exist there, reads find nothing; no request is sent either way."""
    storage = make_supabase_storage(supabase_server)
    seen = record_requests(storage)

    with pytest.raises(StorageError, match="not a valid backup key for Supabase Storage") as caught:
        storage.open_write(key)
    assert f"it refuses {refused!r}" in str(caught.value) and not isinstance(caught.value, ObjectNotFound)
    assert storage.stat(key) is None
    storage.delete(key)
    with pytest.raises(ObjectNotFound):
        storage.open_read(key)
    with pytest.raises(ObjectNotFound):
        storage.url(key, 60)
    assert seen == []


def test_every_key_the_project_builds_is_one_supabase_holds():
    """Tenant keys come from backups/core/naming.py (schema, UUID, file name, collision suffix, manifest)."""
    from backups.catalog.manifest import manifest_key
    from backups.core.naming import (
        COMPRESSION_EXT,
        ENCRYPTION_EXT,
        FORMAT_EXT,
        backup_file_name,
        tenant_key,
        with_suffix,
    )

    schema = "a_" + "z9" * 30  # every character a schema may use, at its longest
    for fmt, compression, encryption, automatic in itertools.product(FORMAT_EXT, COMPRESSION_EXT, ENCRYPTION_EXT,
                                                                     (True, False)):
        name = backup_file_name(schema=schema, fmt=fmt, compression=compression, encryption=encryption,
                                automatic=automatic, at=datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC))
        for file_name in (name, with_suffix(name, 12)):
            key = tenant_key(schema, uuid.uuid4(), file_name)
            assert check_key(key) == key and check_key(manifest_key(key)) == manifest_key(key)


# -- error mapping -----------------------------------------------------------------------------------


def storage_error(status: int, body=None, **kwargs) -> StorageError:
    storage = SupabaseStorage(url="https://proj.supabase.co", key="k", bucket="backups")
    response = httpx.Response(status, json=body) if body is not None else httpx.Response(status, text="<html/>")
    return storage.response_error(response, "reading clinic1/a.sql", key="clinic1/a.sql", **kwargs)


@pytest.mark.parametrize(
    ("status", "body", "kind", "text"),
    [
        (400, {"statusCode": "404", "code": "NoSuchKey", "error": "not_found", "message": "Object not found"},
         ObjectNotFound, "No backup object at clinic1/a.sql."),
        (400, {"statusCode": "404", "code": "NoSuchBucket", "error": "Bucket not found", "message": "Bucket not found"},
         StorageError, "Bucket backups does not exist (SUPABASE_BUCKET)."),
        (401, {"message": "Invalid API key", "hint": "Double check"}, StorageError, "check SUPABASE_KEY"),
        (400, {"statusCode": "403", "code": "AccessDenied", "error": "Unauthorized", "message": "invalid signature"},
         StorageError, "SUPABASE_KEY must be the project's service_role key"),
        (400, {"statusCode": "409", "code": "ResourceAlreadyExists", "error": "Duplicate", "message": "exists"},
         StorageError, "already exists at clinic1/a.sql"),
        (400, {"statusCode": "413", "code": "EntityTooLarge", "error": "Payload too large", "message": "too big"},
         StorageError, "upload size limit"),
        (400, {"statusCode": "429", "error": "Too Many Requests", "message": "slow down"},
         StorageTransientError, "try again later"),
        (500, {"statusCode": "500", "code": "InternalError", "error": "internal", "message": "boom"},
         StorageTransientError, "try again later"),
        (502, None, StorageTransientError, "try again later"),
        (503, {"message": "upstream unavailable"}, StorageTransientError, "try again later"),
        (404, {"message": "no Route matched with those values"}, StorageError, "check SUPABASE_URL"),
        (404, None, StorageError, "check SUPABASE_URL"),
        (200, None, StorageError, "check SUPABASE_URL"),
        (400, {"statusCode": "400", "code": "InvalidBucketName", "error": "Invalid Input", "message": "Bucket name"},
         StorageError, "check SUPABASE_BUCKET"),
        (400, {"statusCode": "400", "code": "InvalidKey", "error": "Invalid Input", "message": "Invalid key"},
         StorageError, "Supabase Storage refused reading clinic1/a.sql (InvalidKey: Invalid key)."),
    ],
)
def test_error_responses_map_to_storage_errors(status, body, kind, text):
    error = storage_error(status, body)
    assert type(error) is kind
    assert text in str(error)


@pytest.mark.parametrize(
    ("status", "body", "text"),
    [
        # `Authorization: Bearer` on the S3 path (SUPABASE_URL=.../storage/v1/s3): storage-api's XML 403
        (403, b'<?xml version="1.0"?><Error><Code>AccessDenied</Code><Message>Missing signature</Message></Error>',
         "check SUPABASE_URL"),
        (403, b"<html>Forbidden</html>", "check SUPABASE_URL"),
        (413, b"<html>413 Request Entity Too Large</html>", "upload size limit"),
    ],
)
def test_answers_that_are_not_storages_json_blame_the_url_not_the_key(status, body, text):
    storage = SupabaseStorage(url="https://proj.supabase.co", key="k", bucket="backups")
    error = storage.response_error(httpx.Response(status, content=body), "reading clinic1/a.sql")
    assert text in str(error) and ("SUPABASE_KEY" not in str(error))


@pytest.mark.parametrize(
    ("message", "text"),
    [
        ('"exp" claim timestamp check failed', "it is an expired JWT"),
        ("Invalid Compact JWS", "could not read SUPABASE_KEY as a JWT"),
        ("signature verification failed", "SUPABASE_KEY must be the project's service_role key"),
    ],
)
def test_refused_tokens_read_as_storage_words_them(message, text):
    """storage-api's verifyJWT passes jose's messages through in a 403 AccessDenied."""
    error = storage_error(400, {"statusCode": "403", "code": "AccessDenied", "error": "Unauthorized",
                                "message": message})
    assert text in str(error) and "SUPABASE_KEY" in str(error) and message in str(error)


@pytest.mark.parametrize(
    ("exc", "kind", "text"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), StorageTransientError, "check SUPABASE_URL"),
        (httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"), StorageError,
         "TLS to https://proj.supabase.co failed"),
        (httpx.ConnectTimeout("timed out"), StorageTransientError, "timed out"),
        (httpx.ReadTimeout("timed out"), StorageTransientError, "timed out"),
        (httpx.RemoteProtocolError("peer closed connection"), StorageTransientError, "connection to Supabase"),
        (httpx.ReadError("connection reset by peer"), StorageTransientError, "connection to Supabase"),
        (httpx.UnsupportedProtocol("no scheme"), StorageError, "check SUPABASE_URL"),
    ],
)
def test_network_errors_map_to_storage_errors(exc, kind, text):
    storage = SupabaseStorage(url="https://proj.supabase.co", key="k")
    error = storage.transport_error(exc, "listing clinic1/")
    assert type(error) is kind
    assert text in str(error)


def test_bad_settings_are_refused_naming_the_setting():
    with pytest.raises(StorageError, match="SUPABASE_UPLOAD_LIMIT"):
        SupabaseStorage(url="https://p.supabase.co", key="k", upload_limit=0)
    with pytest.raises(StorageError, match="SUPABASE_UPLOAD_LIMIT"):
        SupabaseStorage(url="https://p.supabase.co", key="k", upload_limit="50MB")
    with pytest.raises(StorageError, match="BACKUPS_URL_MAX_EXPIRY"):
        SupabaseStorage(url="https://p.supabase.co", key="k", url_max_expiry=0)
    storage = SupabaseStorage(url="https://p.supabase.co", key="k", s3_endpoint="https://p.supabase.co/storage/v1/s3",
                              s3_access_key_id="a", s3_secret_access_key="s", part_size=1024)
    with pytest.raises(StorageError, match="BACKUPS_S3_PART_SIZE"):
        storage.s3  # noqa: B018 - building the S3 side validates its settings


# -- settings ----------------------------------------------------------------------------------------


def test_settings_defaults():
    from django.conf import settings

    storage = SupabaseStorage.from_settings(object())  # nothing set: the documented defaults
    assert storage.bucket == "backups" and storage.upload_limit == 50 * MiB == 52428800
    assert storage.s3_region == "us-east-1" and not storage.s3_enabled
    assert storage.part_size == 16 * MiB and storage.url_max_expiry == 7 * 24 * 3600
    for name in ("SUPABASE_URL", "SUPABASE_KEY", "SUPABASE_BUCKET", "SUPABASE_S3_ENDPOINT", "SUPABASE_S3_REGION",
                 "SUPABASE_S3_ACCESS_KEY_ID", "SUPABASE_S3_SECRET_ACCESS_KEY", "SUPABASE_UPLOAD_LIMIT"):
        assert hasattr(settings, name), name


def test_from_settings_and_get_storage(settings, supabase_server):
    settings.BACKUPS_STORAGE = "supabase"
    settings.SUPABASE_URL = supabase_server.url + "/"
    settings.SUPABASE_KEY = SUPABASE_SERVICE_KEY
    settings.SUPABASE_BUCKET = "tenant-backups-settings"
    settings.SUPABASE_S3_ENDPOINT = supabase_server.s3_endpoint
    settings.SUPABASE_S3_REGION = "auto"  # one Supabase always signs with, besides us-east-1 and its own
    settings.SUPABASE_S3_ACCESS_KEY_ID = SUPABASE_S3_ACCESS_KEY
    settings.SUPABASE_S3_SECRET_ACCESS_KEY = SUPABASE_S3_SECRET_KEY
    settings.SUPABASE_UPLOAD_LIMIT = 10 * MiB
    settings.BACKUPS_S3_PART_SIZE = 8 * MiB

    storage = get_storage()

    assert isinstance(storage, SupabaseStorage) and storage.name == "supabase"
    assert storage.project_url == supabase_server.url and storage.bucket == "tenant-backups-settings"
    assert storage.upload_limit == 10 * MiB and storage.s3_enabled
    assert storage.s3.part_size == 8 * MiB and storage.s3.region_name == "auto"
    storage.check()
    storage.put_bytes("clinic1/a.json", b"{}")
    assert get_storage("supabase").get_bytes("clinic1/a.json") == b"{}"
