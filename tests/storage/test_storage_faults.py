"""Storage faults found against real servers (issue 22, parts 4 and 5).

- Supabase's storage-api answers a refused standard upload without reading its body and then answers nothing more
  on that connection: the writer must not leave that connection in the pool (the stand-in now does the same).
- Its S3 endpoint's error XML is namespaced, so botocore leaves `Error.Code` empty: the code is read from the top.
- The anon key cannot see or create the bucket: the start-up check names the key.
- A failed S3 upload whose abort fails too (connection resets) is tried again, then remembered, and the reaper's
  next sweep aborts it whatever its age (radosgw).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import jwt as pyjwt
import pytest
from botocore.exceptions import ConnectionClosedError

from backups.conf import backups_settings
from backups.storage import s3 as s3_module
from backups.storage.base import StorageError
from tests.servers.supabase_storage import stop

from .conftest import (
    SUPABASE_JWT_SECRET,
    TEST_PART_SIZE,
    SupabaseServer,
    make_s3_storage,
    make_supabase_storage,
    s3_pending_uploads,
    start_supabase,
)

MiB = 1024 * 1024
READ_TIMEOUT = 3  # seconds: a request sent on a connection the server no longer answers fails within it


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SupabaseServer]:
    server = start_supabase(tmp_path_factory.mktemp("supabase-faults"), file_size_limit=8 * MiB)
    yield server
    stop(server.server)


def held(server: SupabaseServer) -> int:
    return server.server.stats.get("held_connections", 0)


# -- part 5: a refused streamed upload leaves no dead connection in the pool ---------------------------------


@pytest.mark.parametrize("size", [3 * MiB, 1000], ids=["streamed", "one-post"])
def test_a_refused_upload_does_not_leave_a_dead_connection_for_the_next_request(server, size):
    storage = make_supabase_storage(server, s3=False, read_timeout=READ_TIMEOUT, upload_limit=8 * MiB)
    storage.check()
    storage.put_bytes("clinic1/once.sql", b"first")
    before = held(server)

    started = time.monotonic()
    with pytest.raises(StorageError, match="already exists at clinic1/once.sql"):
        with storage.open_write("clinic1/once.sql") as writer:
            for offset in range(0, size, 256 * 1024):
                writer.write(b"x" * min(256 * 1024, size - offset))
            writer.commit()
    deadline = time.monotonic() + 2  # the stand-in counts it just after its answer went out
    while held(server) != before + 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert held(server) == before + 1  # the stand-in answered it unread and now answers nothing on it

    # the next requests reuse the pool: none may go out on the refused upload's connection
    assert storage.get_bytes("clinic1/once.sql") == b"first"
    assert storage.stat("clinic1/once.sql").size == 5
    assert time.monotonic() - started < READ_TIMEOUT


# -- part 5: the S3 endpoint's namespaced errors --------------------------------------------------------------


def test_a_wrong_s3_secret_names_signature_does_not_match_from_a_namespaced_error(server):
    storage = make_supabase_storage(server, s3_secret_access_key="wrong")
    with pytest.raises(StorageError) as caught:
        storage.check()
    message = str(caught.value)
    assert "(SignatureDoesNotMatch)" in message and "SUPABASE_S3_SECRET_ACCESS_KEY" in message
    assert "403: 403" not in message
    with pytest.raises(StorageError, match="refused the request signature"):  # a write without check() too
        storage.put_bytes("clinic1/a.sql", b"x" * (TEST_PART_SIZE + 1))


def test_s3_errors_read_their_code_and_message_from_a_namespaced_document(server):
    storage = make_supabase_storage(server)
    storage.check()
    with pytest.raises(StorageError) as caught:
        storage.s3.put_bytes("bad#key.sql", b"x")  # the stand-in refuses it: 400 InvalidKey
    assert "InvalidKey" in str(caught.value) and "Invalid key: bad#key.sql" in str(caught.value)


# -- part 5: the anon key -----------------------------------------------------------------------------------


def test_check_with_the_anon_key_names_the_key(server):
    anon = pyjwt.encode({"role": "anon", "iss": "supabase", "exp": int(time.time()) + 600}, SUPABASE_JWT_SECRET)
    server.server.api_keys.add(anon)
    storage = make_supabase_storage(server, key=anon, s3=False)
    with pytest.raises(StorageError) as caught:
        storage.check()
    message = str(caught.value)
    assert "new row violates row-level security policy" in message
    assert "anon" in message and "service_role" in message and "SUPABASE_KEY" in message


# -- part 4: an abort that fails is tried again, then remembered for the reaper's next sweep --------------------


def reset_aborts(storage, times: int) -> list[str]:
    """Make the next `times` AbortMultipartUpload requests fail as a reset connection does (after botocore's own
    retries: every attempt is cut)."""
    cut: list[str] = []

    def reset(request, **kwargs):
        if len(cut) < times:
            cut.append(request.url)
            raise ConnectionClosedError(endpoint_url=request.url)
        return None

    storage.client.meta.events.register("before-send.s3.AbortMultipartUpload", reset)
    return cut


def failed_upload(storage, key: str) -> None:
    """An upload that fails after its first part went out (the store's connection resets under the next)."""
    def cut(request, **kwargs):
        raise ConnectionClosedError(endpoint_url=request.url)

    writer = storage.open_write(key)
    writer.write(b"a" * (TEST_PART_SIZE + 1))  # starts the multipart upload, first part in flight
    writer._wait_inflight()
    storage.client.meta.events.register("before-send.s3.UploadPart", cut)
    with pytest.raises(StorageError):
        writer.write(b"b" * TEST_PART_SIZE)
        writer.commit()
    storage.client.meta.events.unregister("before-send.s3.UploadPart", cut)


@pytest.fixture
def quick_abort_retries(monkeypatch):
    monkeypatch.setattr(s3_module, "ABORT_RETRY_WAITS", (0.05, 0.05, 0.05), raising=False)


@pytest.fixture
def no_failed_aborts():
    from django.core.cache import cache

    key = getattr(s3_module, "FAILED_ABORTS_KEY", "backups:s3:failed-aborts")
    cache.delete(key)
    yield
    cache.delete(key)


def test_an_abort_cut_by_a_reset_is_tried_again(s3_server, s3_bucket, quick_abort_retries, no_failed_aborts):
    storage = make_s3_storage(s3_server, bucket=s3_bucket, max_attempts=1)
    cut = reset_aborts(storage, times=2)
    failed_upload(storage, "clinic1/reset.sql")
    assert len(cut) == 2  # two tries cut, the third went through
    assert s3_pending_uploads(storage) == []
    assert storage.remembered_failed_aborts() == []


@pytest.mark.django_db
def test_an_abort_that_keeps_failing_is_aborted_by_the_reapers_next_sweep(
        s3_server, s3_bucket, quick_abort_retries, no_failed_aborts, monkeypatch):
    from backups.housekeeping import reaper

    storage = make_s3_storage(s3_server, bucket=s3_bucket, max_attempts=1)
    cut = reset_aborts(storage, times=100)
    failed_upload(storage, "clinic1/stuck.sql")
    assert len(cut) == 1 + len(s3_module.ABORT_RETRY_WAITS)
    pending = s3_pending_uploads(storage)
    assert pending == [storage.object_key("clinic1/stuck.sql")]  # still open: the store never heard the abort
    assert [e["key"] for e in storage.remembered_failed_aborts()] == pending

    # the store is reachable again; the upload is seconds old, far below the hard limit plus grace
    fresh = make_s3_storage(s3_server, bucket=s3_bucket)
    monkeypatch.setattr(reaper, "get_storage", lambda name=None: fresh)
    assert backups_settings.BACKUPS_DUMP_TIME_LIMIT + backups_settings.BACKUPS_RUNNING_GRACE_SECONDS > 600
    assert reaper.abort_stale_uploads() == 1
    assert s3_pending_uploads(fresh) == []
    assert fresh.remembered_failed_aborts() == []
    assert reaper.abort_stale_uploads() == 0  # forgotten once aborted


def test_remembered_aborts_belong_to_their_bucket(s3_server, s3_bucket, quick_abort_retries, no_failed_aborts):
    storage = make_s3_storage(s3_server, bucket=s3_bucket, max_attempts=1)
    reset_aborts(storage, times=100)
    failed_upload(storage, "clinic1/mine.sql")
    other = make_s3_storage(s3_server, bucket=s3_bucket + "-other")
    assert other.remembered_failed_aborts() == [] and other.abort_remembered_uploads() == 0
    assert len(storage.remembered_failed_aborts()) == 1


def test_a_plain_http_client_reusing_the_refused_uploads_connection_waits_for_its_read_timeout(server):
    """What the writer avoids, shown with a bare client: the stand-in answers like storage-api."""
    storage = make_supabase_storage(server, s3=False)
    storage.check()
    storage.put_bytes("clinic1/taken.sql", b"first")
    headers = {**storage.auth_headers, "Content-Type": "application/octet-stream"}
    with httpx.Client(timeout=httpx.Timeout(1.0)) as client:
        body = (b"x" * (256 * 1024) for _ in range(8))
        refused = client.post(storage.object_url("clinic1/taken.sql"), content=body, headers=headers)
        assert refused.status_code == 400 and refused.json()["statusCode"] == "409"
        with pytest.raises(httpx.ReadTimeout):
            client.get(f"{storage.storage_url}/bucket/{storage.bucket}", headers=storage.auth_headers)
