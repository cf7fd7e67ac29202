"""S3-only behaviour: configuration, check() messages, error mapping, encryption, checksums, part sizes, memory."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest
import requests
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from botocore.stub import Stubber

from backups.storage import get_storage
from backups.storage.base import ObjectNotFound, StorageError, StorageTransientError
from backups.storage.s3 import MiB, S3Storage
from tests.servers.moto_s3 import MotoS3Server, free_port

from .conftest import TEST_BUCKET, TEST_PART_SIZE, make_s3_storage, s3_pending_uploads


def client_error(code: str, status: int, operation: str = "PutObject") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "test"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       operation)


# -- check() -----------------------------------------------------------------------------------------


def test_check_passes_on_a_working_bucket(s3_storage):
    s3_storage.check()


def test_check_without_bucket_name(moto_s3: MotoS3Server):
    storage = make_s3_storage(moto_s3.endpoint_url, bucket="")
    with pytest.raises(StorageError) as caught:
        storage.check()
    assert str(caught.value) == "AWS_STORAGE_BUCKET_NAME is not set."


def test_check_with_unreachable_endpoint():
    storage = make_s3_storage(f"http://127.0.0.1:{free_port()}", max_attempts=1, connect_timeout=2)
    with pytest.raises(StorageError) as caught:
        storage.check()
    assert isinstance(caught.value, StorageTransientError)
    assert "AWS_S3_ENDPOINT_URL" in str(caught.value)


def test_check_with_missing_bucket(moto_s3: MotoS3Server, s3_bucket):
    storage = make_s3_storage(moto_s3.endpoint_url, bucket="no-such-bucket")
    with pytest.raises(StorageError) as caught:
        storage.check()
    assert str(caught.value) == "Bucket no-such-bucket does not exist (AWS_STORAGE_BUCKET_NAME)."


def test_check_with_refused_credentials(s3_storage):
    with Stubber(s3_storage.client) as stub:
        stub.add_client_error("head_bucket", service_error_code="403", http_status_code=403)
        with pytest.raises(StorageError) as caught:
            s3_storage.check()
    assert "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in str(caught.value)
    assert not isinstance(caught.value, StorageTransientError)


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
    # moto does not verify presigned signatures or their expiry (it accepts a tampered link): AWS does.


def test_url_expiry_is_capped_by_setting(moto_s3: MotoS3Server, s3_bucket):
    storage = make_s3_storage(moto_s3.endpoint_url, url_max_expiry=3600)
    assert storage.url("clinic1/a.sql", 3600)
    with pytest.raises(ValueError, match="1 to 3600"):
        storage.url("clinic1/a.sql", 3601)
    with pytest.raises(ValueError):
        storage.url("clinic1/a.sql", True)  # not a number of seconds
    assert make_s3_storage(moto_s3.endpoint_url, url_max_expiry=10**9).url_max_expiry == 604800


# -- client configuration ----------------------------------------------------------------------------


def sent_headers(storage: S3Storage) -> list[dict[str, str]]:
    seen: list[dict[str, str]] = []
    storage.client.meta.events.register(
        "before-send.s3.*", lambda request, **_: seen.append({k.lower(): v for k, v in request.headers.items()})
    )
    return seen


def test_checksum_when_required_configures_the_client(moto_s3: MotoS3Server, s3_bucket):
    storage = make_s3_storage(moto_s3.endpoint_url, request_checksum_calculation="when_required")
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


def test_from_settings_and_get_storage(settings, moto_s3: MotoS3Server):
    settings.BACKUPS_STORAGE = "s3"
    settings.AWS_STORAGE_BUCKET_NAME = TEST_BUCKET
    settings.AWS_ACCESS_KEY_ID = "testing"
    settings.AWS_SECRET_ACCESS_KEY = "testing"
    settings.AWS_S3_ENDPOINT_URL = moto_s3.endpoint_url
    settings.AWS_S3_ADDRESSING_STYLE = "path"
    settings.AWS_S3_REQUEST_CHECKSUM_CALCULATION = "when_required"
    settings.AWS_S3_KEY_PREFIX = "tenant-backups"
    settings.BACKUPS_S3_PART_SIZE = 8 * MiB

    storage = get_storage()

    assert isinstance(storage, S3Storage) and storage.name == "s3"
    assert storage.bucket == TEST_BUCKET and storage.endpoint_url == moto_s3.endpoint_url
    assert storage.key_prefix == "tenant-backups/"
    assert storage.part_size == 8 * MiB and storage.max_object_size == 8 * MiB * 10_000
    assert storage.sse == "AES256" and storage.region_name == "us-east-1"
    assert storage.client.meta.config.s3["addressing_style"] == "path"
    # AWS_S3_MAX_ATTEMPTS counts every attempt, the first included (botocore's "max_attempts" counts retries).
    assert storage.client.meta.config.retries == {"mode": "standard", "total_max_attempts": 5}


# -- encryption, storage class, layout ---------------------------------------------------------------


def test_sse_aes256_is_sent(s3_storage):
    s3_storage.put_bytes("clinic1/small.json", b"{}")
    with s3_storage.open_write("clinic1/multi.sql") as writer:
        writer.write(b"z" * (TEST_PART_SIZE + 1))
        writer.commit()
    for key in ("backups/clinic1/small.json", "backups/clinic1/multi.sql"):
        assert s3_storage.client.head_object(Bucket=TEST_BUCKET, Key=key)["ServerSideEncryption"] == "AES256"


def test_sse_kms_and_storage_class(moto_s3: MotoS3Server, s3_bucket):
    storage = make_s3_storage(
        moto_s3.endpoint_url, sse="aws:kms", sse_kms_key_id="alias/backups", storage_class="STANDARD_IA"
    )
    storage.put_bytes("clinic1/a.sql", b"data")
    head = storage.client.head_object(Bucket=TEST_BUCKET, Key="backups/clinic1/a.sql")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["StorageClass"] == "STANDARD_IA"
    assert storage.stat("clinic1/a.sql").storage_class == "STANDARD_IA"
    assert [obj.storage_class for obj in storage.list("clinic1/")] == ["STANDARD_IA"]


def test_sse_none_sends_no_encryption_header(moto_s3: MotoS3Server, s3_bucket):
    storage = make_s3_storage(moto_s3.endpoint_url, sse="none")
    headers = sent_headers(storage)
    storage.put_bytes("clinic1/a.sql", b"data")
    assert not [h for h in headers if "x-amz-server-side-encryption" in h]


def test_objects_live_under_the_key_prefix(s3_storage):
    s3_storage.put_bytes("clinic1/a.sql", b"data")
    raw = s3_storage.client.list_objects_v2(Bucket=TEST_BUCKET)["Contents"]
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


def test_abort_incomplete_uploads(s3_storage):
    stale = s3_storage.open_write("clinic1/stale.sql")
    stale.write(b"s" * (TEST_PART_SIZE + 1))  # one part sent: a multipart upload now exists
    other = s3_storage.open_write("clinic2/other.sql")
    other.write(b"o" * (TEST_PART_SIZE + 1))
    assert len(s3_pending_uploads(s3_storage)) == 2

    # moto dates every upload 2010-11-10, so both count as older than an hour; only the prefix tells them apart.
    assert s3_storage.abort_incomplete_uploads("clinic1/", older_than=timedelta(hours=1)) == 1

    assert s3_pending_uploads(s3_storage) == ["backups/clinic2/other.sql"]
    assert s3_storage.abort_incomplete_uploads("", older_than=datetime.now(UTC)) == 1
    assert s3_pending_uploads(s3_storage) == []


def test_abort_incomplete_uploads_spares_recent_ones(s3_storage):
    now = datetime.now(UTC)
    uploads = [
        {"Key": "backups/clinic1/running.sql", "UploadId": "recent", "Initiated": now - timedelta(minutes=5)},
        {"Key": "backups/clinic1/stale.sql", "UploadId": "old", "Initiated": now - timedelta(days=2)},
    ]
    with Stubber(s3_storage.client) as stub:
        stub.add_response("list_multipart_uploads", {"Bucket": TEST_BUCKET, "Uploads": uploads},
                          {"Bucket": TEST_BUCKET, "Prefix": "backups/clinic1/"})
        stub.add_response("abort_multipart_upload", {},
                          {"Bucket": TEST_BUCKET, "Key": "backups/clinic1/stale.sql", "UploadId": "old"})
        assert s3_storage.abort_incomplete_uploads("clinic1/", older_than=timedelta(days=1)) == 1
        stub.assert_no_pending_responses()
