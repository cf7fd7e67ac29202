"""S3-only behaviour: configuration, check() messages, error mapping, encryption, checksums, part sizes, memory.

They run against the session's S3 server (radosgw unless TEST_S3=moto): tests marked `radosgw` need a
server that checks signatures, link expiry and encryption headers, which moto does not.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import requests
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from botocore.stub import Stubber
from django.conf import settings

from backups.storage import get_storage
from backups.storage.base import ObjectNotFound, StorageError, StorageTransientError
from backups.storage.s3 import MiB, S3Storage
from tests.servers.moto_s3 import free_port
from tests.servers.radosgw import S3TestServer

from .conftest import TEST_PART_SIZE, make_s3_storage, s3_pending_uploads

CREDENTIALS = "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"


def client_error(code: str, status: int, operation: str = "PutObject") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "test"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       operation)


# -- check() -----------------------------------------------------------------------------------------


def raw_keys(storage: S3Storage) -> list[str]:
    """Every key in the storage's bucket, whatever its prefix."""
    pages = storage.client.get_paginator("list_objects_v2").paginate(Bucket=storage.bucket)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))


def test_check_passes_on_a_working_bucket_and_leaves_nothing(s3_storage):
    s3_storage.check()
    assert raw_keys(s3_storage) == [] and s3_pending_uploads(s3_storage) == []


def test_check_probes_writes_once_per_configuration(s3_server: S3TestServer, s3_bucket):
    """A readiness probe calls check() every few seconds: after the first, only the bucket's HEAD goes out."""
    calls: list[str] = []
    first = make_s3_storage(s3_server, bucket=s3_bucket)
    first.client.meta.events.register("before-call.s3.*", lambda model, **_: calls.append(model.name))
    first.check()
    assert calls == ["HeadBucket", "PutObject", "DeleteObject"]

    calls.clear()
    again = make_s3_storage(s3_server, bucket=s3_bucket)  # get_storage() builds a new one each time
    again.client.meta.events.register("before-call.s3.*", lambda model, **_: calls.append(model.name))
    again.check()
    assert calls == ["HeadBucket"]

    calls.clear()
    other = make_s3_storage(s3_server, bucket=s3_bucket, storage_class=s3_server.storage_class)
    other.client.meta.events.register("before-call.s3.*", lambda model, **_: calls.append(model.name))
    other.check()  # another configuration is probed again
    assert calls == ["HeadBucket", "PutObject", "DeleteObject"]


def test_check_without_bucket_name(s3_server: S3TestServer):
    storage = make_s3_storage(s3_server, bucket="")
    with pytest.raises(StorageError) as caught:
        storage.check()
    assert str(caught.value) == "AWS_STORAGE_BUCKET_NAME is not set."


def test_check_with_unreachable_endpoint(s3_server: S3TestServer):
    storage = make_s3_storage(s3_server, endpoint_url=f"http://127.0.0.1:{free_port()}", max_attempts=1,
                              connect_timeout=2)
    with pytest.raises(StorageError) as caught:
        storage.check()
    assert isinstance(caught.value, StorageTransientError)
    assert "AWS_S3_ENDPOINT_URL" in str(caught.value)


def test_check_with_missing_bucket(s3_server: S3TestServer, s3_bucket):
    storage = make_s3_storage(s3_server, bucket="no-such-bucket")
    with pytest.raises(StorageError) as caught:
        storage.check()
    assert str(caught.value) == "Bucket no-such-bucket does not exist (AWS_STORAGE_BUCKET_NAME)."


@pytest.mark.radosgw
@pytest.mark.parametrize("wrong", ["secret_access_key", "access_key_id"])
def test_check_with_refused_credentials(s3_server: S3TestServer, s3_bucket, wrong):
    storage = make_s3_storage(s3_server, bucket=s3_bucket, **{wrong: "WRONG" + getattr(s3_server, wrong)[5:]})
    with pytest.raises(StorageError) as caught:
        storage.check()
    assert str(caught.value) == f"S3 denied access to bucket {s3_bucket}; check {CREDENTIALS}."
    assert not isinstance(caught.value, StorageTransientError)


@pytest.mark.radosgw
def test_wrong_secret_is_refused(s3_server: S3TestServer, s3_storage):
    """The server checks each request's signature: a wrong secret writes nothing, reads nothing, lists nothing."""
    s3_storage.put_bytes("clinic1/a.sql", b"data")
    wrong = make_s3_storage(s3_server, bucket=s3_storage.bucket, secret_access_key=s3_server.secret_access_key[::-1])

    for action in (lambda: wrong.put_bytes("clinic1/b.sql", b"forged"), lambda: wrong.get_bytes("clinic1/a.sql"),
                   lambda: list(wrong.list("clinic1/")), lambda: wrong.delete("clinic1/a.sql")):
        with pytest.raises(StorageError) as caught:
            action()
        assert "SignatureDoesNotMatch" in str(caught.value) and CREDENTIALS in str(caught.value)
        assert not isinstance(caught.value, (StorageTransientError, ObjectNotFound))
    assert raw_keys(s3_storage) == ["backups/clinic1/a.sql"]
    assert s3_storage.get_bytes("clinic1/a.sql") == b"data"


# -- error mapping -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "kind", "names"),
    [
        ("SlowDown", 503, StorageTransientError, ""),
        ("InternalError", 500, StorageTransientError, ""),
        ("ServiceUnavailable", 503, StorageTransientError, ""),
        ("NoSuchBucket", 404, StorageError, "AWS_STORAGE_BUCKET_NAME"),
        ("AccessDenied", 403, StorageError, "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"),
        ("InvalidAccessKeyId", 403, StorageError, "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"),
        ("SignatureDoesNotMatch", 403, StorageError, "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"),
        ("XAmzContentSHA256Mismatch", 400, StorageError, "AWS_S3_REQUEST_CHECKSUM_CALCULATION"),
        ("InvalidStorageClass", 400, StorageError, "AWS_S3_STORAGE_CLASS"),
        ("KMS.NotFoundException", 400, StorageError, "AWS_S3_SSE_KMS_KEY_ID"),
    ],
)
def test_client_errors_map_to_storage_errors(s3_storage, code, status, kind, names):
    with Stubber(s3_storage.client) as stub:
        stub.add_client_error("put_object", service_error_code=code, http_status_code=status)
        with pytest.raises(StorageError) as caught:
            s3_storage.put_bytes("clinic1/m.json", b"{}")
    assert type(caught.value) is kind
    assert names in str(caught.value)
    if kind is StorageError:
        assert str(caught.value).count(". ") == 0  # one sentence


def test_network_errors_are_transient(s3_storage):
    unreachable = s3_storage.map_error(EndpointConnectionError(endpoint_url="http://x"), "uploading k")
    timeout = s3_storage.map_error(ReadTimeoutError(endpoint_url="http://x"), "reading k")
    assert isinstance(unreachable, StorageTransientError) and "AWS_S3_ENDPOINT_URL" in str(unreachable)
    assert isinstance(timeout, StorageTransientError)


def test_missing_object_through_get_maps_to_object_not_found(s3_storage):
    with pytest.raises(ObjectNotFound):
        s3_storage.open_read("clinic1/none.sql")


def test_refusal_without_a_message_names_code_and_status(s3_storage):
    """Some stores send no message (radosgw: `InvalidRequest`, nothing else): never print "None"."""
    refusal = ClientError({"Error": {"Code": "InvalidRequest"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
                          "PutObject")
    error = s3_storage.map_error(refusal, "uploading clinic1/a.sql")
    assert str(error) == "S3 refused uploading clinic1/a.sql (InvalidRequest, HTTP 400)."


@pytest.mark.radosgw
def test_real_refusal_without_a_message(s3_server: S3TestServer, s3_bucket):
    """radosgw refuses a storage class it does not offer with `InvalidArgument` and no message."""
    storage = make_s3_storage(s3_server, bucket=s3_bucket, storage_class="GLACIER")
    with pytest.raises(StorageError) as caught:
        storage.put_bytes("clinic1/a.sql", b"data")
    assert str(caught.value) == "S3 refused uploading clinic1/a.sql (InvalidArgument, HTTP 400)."


def test_failed_commit_aborts_the_upload(s3_storage, monkeypatch):
    writer = s3_storage.open_write("clinic1/commit-fails.sql")
    writer.write(os.urandom(1024) * (11 * 1024))  # 11 MiB: two parts uploaded, one buffered
    assert s3_pending_uploads(s3_storage) == ["backups/clinic1/commit-fails.sql"]

    def refuse(**_):
        raise client_error("SlowDown", 503, "CompleteMultipartUpload")

    monkeypatch.setattr(s3_storage.client, "complete_multipart_upload", refuse)
    with pytest.raises(StorageTransientError):
        writer.commit()
    monkeypatch.undo()

    assert s3_pending_uploads(s3_storage) == []
    assert s3_storage.stat("clinic1/commit-fails.sql") is None


# -- presigned URLs ----------------------------------------------------------------------------------


def test_presigned_url_downloads_the_object(s3_storage):
    data = os.urandom(3 * MiB)
    s3_storage.put_bytes("clinic1/backup.sql.zst", data)

    url = s3_storage.url("clinic1/backup.sql.zst", 300)

    assert "X-Amz-Expires=300" in url and "/backups/clinic1/backup.sql.zst" in url
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert hashlib.sha256(response.content).digest() == hashlib.sha256(data).digest()


def with_query(url: str, **changes: str) -> str:
    """`url` with some query parameters replaced."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


@pytest.mark.radosgw
def test_tampered_presigned_link_is_refused(s3_storage):
    s3_storage.put_bytes("clinic1/mine.sql", b"mine")
    s3_storage.put_bytes("clinic2/theirs.sql", b"theirs")
    url = s3_storage.url("clinic1/mine.sql", 300)
    query = dict(parse_qsl(urlsplit(url).query))
    signature, (key_id, scope) = query["X-Amz-Signature"], query["X-Amz-Credential"].split("/", 1)
    tampered = {
        "another object": url.replace("/clinic1/mine.sql?", "/clinic2/theirs.sql?"),
        "a longer life": with_query(url, **{"X-Amz-Expires": "604800"}),
        "another signature": with_query(url, **{"X-Amz-Signature": signature[:-4] + "0000"}),
        "another key id": with_query(url, **{"X-Amz-Credential": f"{key_id[:-4]}ZZZZ/{scope}"}),
    }
    for what, link in tampered.items():
        response = requests.get(link, timeout=10)
        assert response.status_code == 403, (what, response.status_code)
        assert b"mine" not in response.content and b"theirs" not in response.content
    assert requests.get(url, timeout=10).content == b"mine"  # the untouched link still works


@pytest.mark.radosgw
def test_expired_presigned_link_is_refused(s3_storage):
    s3_storage.put_bytes("clinic1/soon.sql", b"soon gone")
    url = s3_storage.url("clinic1/soon.sql", 2)
    assert requests.get(url, timeout=10).content == b"soon gone"
    time.sleep(3.5)  # past X-Amz-Date + 2 s, with a second to spare for the date's whole seconds
    response = requests.get(url, timeout=10)
    assert response.status_code == 403 and b"soon gone" not in response.content


def test_url_expiry_is_capped_by_setting(s3_server: S3TestServer, s3_bucket):
    storage = make_s3_storage(s3_server, bucket=s3_bucket, url_max_expiry=3600)
    assert storage.url("clinic1/a.sql", 3600)
    with pytest.raises(ValueError, match="1 to 3600"):
        storage.url("clinic1/a.sql", 3601)
    with pytest.raises(ValueError):
        storage.url("clinic1/a.sql", True)  # not a number of seconds
    assert make_s3_storage(s3_server, url_max_expiry=10**9).url_max_expiry == 604800


# -- client configuration ----------------------------------------------------------------------------


def sent_headers(storage: S3Storage) -> list[dict[str, str]]:
    seen: list[dict[str, str]] = []
    storage.client.meta.events.register(
        "before-send.s3.*", lambda request, **_: seen.append({k.lower(): v for k, v in request.headers.items()})
    )
    return seen


def test_checksum_when_required_configures_the_client(s3_server: S3TestServer, s3_bucket):
    storage = make_s3_storage(s3_server, bucket=s3_bucket, request_checksum_calculation="when_required")
    assert storage.client.meta.config.request_checksum_calculation == "when_required"
    assert storage.client.meta.config.response_checksum_validation == "when_required"
    headers = sent_headers(storage)

    storage.put_bytes("clinic1/small.json", b"{}")
    with storage.open_write("clinic1/multi.sql") as writer:  # multipart without checksums
        writer.write(b"x" * (TEST_PART_SIZE + 10))
        writer.commit()

    assert storage.get_bytes("clinic1/small.json") == b"{}"
    assert storage.stat("clinic1/multi.sql").size == TEST_PART_SIZE + 10
    assert not [h for h in headers if any(name.startswith("x-amz-checksum") for name in h)]


def test_checksum_when_supported_sends_crc32(s3_storage):
    assert s3_storage.client.meta.config.request_checksum_calculation == "when_supported"
    headers = sent_headers(s3_storage)
    with s3_storage.open_write("clinic1/multi.sql") as writer:
        writer.write(b"y" * (TEST_PART_SIZE + 10))
        writer.commit()
    assert any("x-amz-checksum-crc32" in h or "x-amz-trailer" in h for h in headers)
    assert s3_storage.get_bytes("clinic1/multi.sql") == b"y" * (TEST_PART_SIZE + 10)


def test_bad_settings_are_refused_naming_the_setting():
    for kwargs, name in [
        ({"part_size": 4 * MiB}, "BACKUPS_S3_PART_SIZE"),
        ({"sse": "rot13"}, "AWS_S3_SSE"),
        ({"addressing_style": "sideways"}, "AWS_S3_ADDRESSING_STYLE"),
        ({"request_checksum_calculation": "always"}, "AWS_S3_REQUEST_CHECKSUM_CALCULATION"),
        ({"sse_kms_key_id": "alias/x"}, "AWS_S3_SSE_KMS_KEY_ID"),
    ]:
        with pytest.raises(StorageError, match=name):
            S3Storage(bucket="b", **kwargs)


def test_from_settings_and_get_storage(settings, s3_server: S3TestServer, s3_bucket):
    settings.BACKUPS_STORAGE = "s3"
    settings.AWS_STORAGE_BUCKET_NAME = s3_bucket
    settings.AWS_ACCESS_KEY_ID = s3_server.access_key_id
    settings.AWS_SECRET_ACCESS_KEY = s3_server.secret_access_key
    settings.AWS_S3_ENDPOINT_URL = s3_server.endpoint_url
    settings.AWS_S3_ADDRESSING_STYLE = "path"
    settings.AWS_S3_REQUEST_CHECKSUM_CALCULATION = "when_required"
    settings.AWS_S3_KEY_PREFIX = "tenant-backups"
    settings.BACKUPS_S3_PART_SIZE = 8 * MiB

    storage = get_storage()

    assert isinstance(storage, S3Storage) and storage.name == "s3"
    assert storage.bucket == s3_bucket and storage.endpoint_url == s3_server.endpoint_url
    assert storage.key_prefix == "tenant-backups/"
    assert storage.part_size == 8 * MiB and storage.max_object_size == 8 * MiB * 10_000
    assert storage.sse == "" and storage.region_name == "us-east-1"  # encryption left to the bucket
    assert storage.client.meta.config.s3["addressing_style"] == "path"
    # AWS_S3_MAX_ATTEMPTS counts every attempt, the first included (botocore's "max_attempts" counts retries).
    assert storage.client.meta.config.retries == {"mode": "standard", "total_max_attempts": 5}
    storage.check()


def test_default_settings_leave_encryption_to_the_bucket(settings):
    for name in ("AWS_S3_SSE", "AWS_S3_SSE_KMS_KEY_ID"):
        if hasattr(settings, name):
            delattr(settings, name)
    storage = S3Storage.from_settings(settings, bucket="b")
    assert storage.sse == "" and "ServerSideEncryption" not in storage.object_args()


# -- encryption, storage class, layout ---------------------------------------------------------------


SSE_HEADER = "x-amz-server-side-encryption"


def test_sse_header_is_sent_on_put_and_multipart(s3_server: S3TestServer, s3_bucket):
    storage = make_s3_storage(s3_server, bucket=s3_bucket, sse="AES256")
    headers = sent_headers(storage)
    storage.put_bytes("clinic1/small.json", b"{}")
    with storage.open_write("clinic1/multi.sql") as writer:
        writer.write(b"z" * (TEST_PART_SIZE + 1))
        writer.commit()
    assert sum(h.get(SSE_HEADER) == b"AES256" for h in headers) == 2  # PutObject, CreateMultipartUpload
    assert storage.get_bytes("clinic1/small.json") == b"{}"


def test_sse_kms_and_storage_class(s3_server: S3TestServer, s3_bucket):
    """aws:kms with a key the server holds, and a second storage class: check() passes, objects say so."""
    storage = make_s3_storage(s3_server, bucket=s3_bucket, sse="aws:kms", sse_kms_key_id=s3_server.kms_key_id,
                              storage_class=s3_server.storage_class)
    storage.check()
    storage.put_bytes("clinic1/a.sql", b"data")
    with storage.open_write("clinic1/multi.sql") as writer:
        writer.write(b"k" * (TEST_PART_SIZE + 1))
        writer.commit()
    for key in ("backups/clinic1/a.sql", "backups/clinic1/multi.sql"):
        head = storage.client.head_object(Bucket=s3_bucket, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms" and head["StorageClass"] == s3_server.storage_class
        assert head["SSEKMSKeyId"].endswith(s3_server.kms_key_id)
    assert storage.get_bytes("clinic1/a.sql") == b"data"
    assert storage.get_bytes("clinic1/multi.sql") == b"k" * (TEST_PART_SIZE + 1)
    assert storage.stat("clinic1/a.sql").storage_class == s3_server.storage_class
    assert {obj.storage_class for obj in storage.list("clinic1/")} == {s3_server.storage_class}


def test_default_sends_no_encryption_header(s3_server: S3TestServer, s3_storage):
    headers = sent_headers(s3_storage)
    s3_storage.check()
    s3_storage.put_bytes("clinic1/a.sql", b"data")
    assert headers and not [h for h in headers if SSE_HEADER in h]
    assert make_s3_storage(s3_server, sse="none").sse == ""  # "none" is the same as empty


@pytest.mark.radosgw
def test_check_refuses_an_encryption_the_store_ignores(s3_server: S3TestServer, s3_bucket):
    """radosgw 16.2 stores AES256 (SSE-S3, which needs Vault there) unencrypted: check() must say so."""
    storage = make_s3_storage(s3_server, bucket=s3_bucket, sse="AES256")
    with pytest.raises(StorageError) as caught:
        storage.check()
    message = str(caught.value)
    assert message.startswith("S3 stored the check object without the server-side encryption AWS_S3_SSE=AES256")
    assert "leave AWS_S3_SSE empty" in message and "None" not in message
    assert not isinstance(caught.value, StorageTransientError)
    assert raw_keys(storage) == []  # the probe object is gone
    make_s3_storage(s3_server, bucket=s3_bucket).check()  # the default (the bucket's encryption) passes


@pytest.mark.radosgw
def test_worker_refuses_to_start_with_an_encryption_the_store_ignores(s3_server: S3TestServer, s3_bucket):
    """The README's promise: a wrong setting stops the worker at start-up with a sentence naming it."""
    env = {**os.environ, "BACKUPS_STORAGE": "s3", "AWS_STORAGE_BUCKET_NAME": s3_bucket, "AWS_S3_SSE": "AES256",
           "AWS_S3_ENDPOINT_URL": s3_server.endpoint_url, "AWS_ACCESS_KEY_ID": s3_server.access_key_id,
           "AWS_SECRET_ACCESS_KEY": s3_server.secret_access_key, "AWS_S3_REGION_NAME": s3_server.region}
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "project", "worker", "-Q", "backups.dump", "-c", "1",
         "--without-mingle", "--without-gossip", "-n", "sse-misconfigured@%h"],
        env=env, capture_output=True, text=True, timeout=120, cwd=settings.BASE_DIR,
    )
    lines = [line for line in proc.stderr.splitlines() if line.startswith("tenant-backups cannot start:")]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "AWS_S3_SSE=AES256" in lines[0] and "None" not in lines[0]


@pytest.mark.radosgw
@pytest.mark.parametrize(
    ("overrides", "start", "names"),
    [
        ({"sse": "aws:kms", "sse_kms_key_id": "no-such-key"},
         "S3 refused server-side encryption AWS_S3_SSE=aws:kms with AWS_S3_SSE_KMS_KEY_ID=no-such-key (",
         "check AWS_S3_SSE_KMS_KEY_ID"),
        ({"sse": "aws:kms"}, "S3 refused server-side encryption AWS_S3_SSE=aws:kms (InvalidArgument, HTTP 400",
         "leave it empty"),
        ({"storage_class": "GLACIER"}, "S3 refused the storage class AWS_S3_STORAGE_CLASS=GLACIER (InvalidArgument",
         "STANDARD"),
        ({"storage_class": "GLACIER", "sse": "aws:kms", "sse_kms_key_id": "kms-key"},
         "S3 refused the storage class AWS_S3_STORAGE_CLASS=GLACIER (", "STANDARD"),
    ],
)
def test_check_names_the_setting_the_store_refuses(s3_server: S3TestServer, s3_bucket, overrides, start, names):
    if overrides.get("sse_kms_key_id") == "kms-key":
        overrides = {**overrides, "sse_kms_key_id": s3_server.kms_key_id}  # encryption fine, class refused
    storage = make_s3_storage(s3_server, bucket=s3_bucket, **overrides)
    with pytest.raises(StorageError) as caught:
        storage.check()
    message = str(caught.value)
    assert message.startswith(start) and names in message, message
    assert "None" not in message and not isinstance(caught.value, StorageTransientError)
    assert raw_keys(storage) == []


def test_objects_live_under_the_key_prefix(s3_storage):
    s3_storage.put_bytes("clinic1/a.sql", b"data")
    raw = s3_storage.client.list_objects_v2(Bucket=s3_storage.bucket)["Contents"]
    assert [item["Key"] for item in raw] == ["backups/clinic1/a.sql"]
    obj = s3_storage.stat("clinic1/a.sql")
    assert obj.key == "clinic1/a.sql" and obj.size == 4 and obj.last_modified.tzinfo is not None
    assert [o.key for o in s3_storage.list("clinic1/")] == ["clinic1/a.sql"]


# -- parts and memory --------------------------------------------------------------------------------


def test_small_object_is_one_put_and_large_is_multipart(s3_storage):
    calls: list[str] = []
    s3_storage.client.meta.events.register("before-call.s3.*", lambda model, **_: calls.append(model.name))

    with s3_storage.open_write("clinic1/small.sql") as writer:
        writer.write(b"a" * (TEST_PART_SIZE - 1))
        assert calls == []  # nothing is sent before a part fills up
        writer.commit()
    assert calls == ["PutObject"]

    calls.clear()
    with s3_storage.open_write("clinic1/exact.sql") as writer:
        writer.write(b"b" * (2 * TEST_PART_SIZE))  # exactly two parts: the full last one goes out on commit
        writer.commit()
    assert calls == ["CreateMultipartUpload", "UploadPart", "UploadPart", "CompleteMultipartUpload"]
    assert s3_storage.stat("clinic1/exact.sql").size == 2 * TEST_PART_SIZE


def test_object_larger_than_max_parts_is_refused(s3_storage):
    s3_storage.max_parts = 3  # 10,000 in real life: the same arithmetic, on 15 MiB instead of 50 GB
    with s3_storage.open_write("clinic1/fits.sql") as writer:
        writer.write(b"f" * (3 * TEST_PART_SIZE))
        writer.commit()
    assert s3_storage.stat("clinic1/fits.sql").size == 3 * TEST_PART_SIZE

    with pytest.raises(StorageError, match="BACKUPS_S3_PART_SIZE"):
        with s3_storage.open_write("clinic1/too-big.sql") as writer:
            writer.write(b"t" * (3 * TEST_PART_SIZE))
            writer.write(b"t")
    assert s3_pending_uploads(s3_storage) == []
    assert s3_storage.stat("clinic1/too-big.sql") is None


def test_upload_memory_stays_at_one_part(s3_storage):
    """40 MiB in 7 MiB writes (bigger than a part) through 5 MiB parts: the buffer never passes one part."""
    chunk = os.urandom(7 * MiB)
    tracemalloc.start()
    try:
        with s3_storage.open_write("clinic1/flat.sql") as writer:
            for _ in range(6):
                writer.write(chunk)
                assert len(writer.buffer) <= TEST_PART_SIZE
            writer.commit()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert s3_storage.stat("clinic1/flat.sql").size == 42 * MiB
    # One part buffered, plus what botocore holds while sending it; 42 MiB would show if it accumulated.
    assert peak < 3 * TEST_PART_SIZE, f"peak {peak / MiB:.1f} MiB"


def test_read_is_streamed(s3_storage):
    s3_storage.put_bytes("clinic1/r.sql", b"0123456789" * 1000)
    with s3_storage.open_read("clinic1/r.sql") as stream:
        assert stream.read(4) == b"0123"
        assert stream.read(6) == b"456789"
        rest = stream.read()
    assert len(rest) == 9990
    assert stream.closed


# -- housekeeping ------------------------------------------------------------------------------------


@pytest.mark.radosgw  # moto dates every upload 2010-11-10
def test_abort_incomplete_uploads(s3_storage):
    """Only uploads under the prefix and started before the cutoff are aborted; a running one is spared."""
    stale = s3_storage.open_write("clinic1/stale.sql")
    stale.write(b"s" * (TEST_PART_SIZE + 1))  # one part sent: a multipart upload now exists
    elsewhere = s3_storage.open_write("clinic2/elsewhere.sql")
    elsewhere.write(b"e" * (TEST_PART_SIZE + 1))
    time.sleep(1.1)  # the server dates uploads (some to the second): the cutoff falls clearly between
    cutoff = datetime.now(UTC)
    time.sleep(1.1)
    running = s3_storage.open_write("clinic1/running.sql")
    running.write(b"r" * (TEST_PART_SIZE + 1))
    assert len(s3_pending_uploads(s3_storage)) == 3

    assert s3_storage.abort_incomplete_uploads("clinic1/", older_than=timedelta(hours=1)) == 0  # all recent
    assert s3_storage.abort_incomplete_uploads("clinic1/", older_than=cutoff) == 1

    assert s3_pending_uploads(s3_storage) == ["backups/clinic1/running.sql", "backups/clinic2/elsewhere.sql"]
    running.write(b"r")
    running.commit()  # the spared upload still completes
    assert s3_storage.stat("clinic1/running.sql").size == TEST_PART_SIZE + 2
    assert s3_storage.abort_incomplete_uploads("", older_than=datetime.now(UTC) + timedelta(seconds=5)) == 1
    assert s3_pending_uploads(s3_storage) == []
    with pytest.raises(StorageError):
        stale.commit()  # its upload is gone
