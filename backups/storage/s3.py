"""S3 storage (AWS, MinIO, Cloudflare R2, Ceph, Supabase's S3 endpoint): `<bucket>/<prefix><schema>/<file>`.

Uploads stream as multipart uploads through one bounded part buffer: memory stays at about one part
(`BACKUPS_S3_PART_SIZE`, 16 MiB by default) whatever the object size. S3 allows at most 10,000 parts,
so the largest object is `part_size * 10,000` (156.25 GiB at 16 MiB; raise the part size for more).
Part sizes are never grown mid-upload, because some S3-compatible stores (R2) require every part but
the last to have the same size. An object smaller than one part is sent with a single PutObject.

Why not boto3's managed transfer (`upload_fileobj` + TransferConfig): measured on radosgw in
bench/bench_s3.py, it is no faster at the same memory (one request in flight); it is faster only with
more requests in flight, each a part of memory more, which takes a worker past its 150 MiB. And the
pipeline pushes bytes while s3transfer pulls them: feeding it takes as much glue as this writer, where a
mistaken end of stream would complete a truncated object that an explicit Complete/Abort cannot.

Server-side encryption is left to the bucket unless `AWS_S3_SSE` asks for a mode: AWS encrypts every new
object with SSE-S3 by default (since January 2023), while sending the header to a store that lacks the
mode (Ceph without Vault, MinIO without KMS) makes every upload fail or, worse, is silently ignored.
check() therefore stores and deletes a tiny probe object with the configured headers, so a mode the
store refuses or ignores stops the worker at start-up with a sentence naming the setting.

S3 Object Lock (`AWS_S3_OBJECT_LOCK_MODE`, GOVERNANCE or COMPLIANCE): every object is written with a retain-until
date its caller chose (backups.catalog.object_lock: at least as long as retention keeps it), so whoever holds the
bucket's write keys cannot delete or overwrite it before then. The bucket must have been created with Object Lock
(check() refuses one without, naming the setting). radosgw 16 ignores the lock headers of CreateMultipartUpload,
so a committed object's retention is also set with PutObjectRetention (AWS honours both; the second is a no-op).
A lock-enabled bucket is versioned: a plain DeleteObject would only hide the object behind a delete marker, so
delete() removes every version of the key, and a version still locked raises ObjectLocked with its date.
"""

from __future__ import annotations

import io
import logging
import posixpath
import threading
import time
import uuid
from collections.abc import Collection, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ChecksumError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    SSLError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from .base import (
    ObjectLocked,
    ObjectNotFound,
    ObjectWriter,
    Storage,
    StorageError,
    StorageTransientError,
    StoredObject,
    kwargs_from_settings,
)

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
MAX_PART_SIZE = 5 * 1024 * MiB  # S3's maximum part size
MAX_PARTS = 10_000  # S3's maximum part count
S3_MAX_URL_EXPIRY = 7 * 24 * 3600  # SigV4 presigned URLs live at most 7 days

# "" (the default) and "none" send no header: the bucket's default encryption applies.
SSE_CHOICES = {"aes256": "AES256", "aws:kms": "aws:kms", "none": "", "": ""}
CHECK_PREFIX = ".backups-check/"  # under the key prefix: where check() writes (and deletes) its probe object
ADDRESSING_STYLES = ("auto", "path", "virtual")
OBJECT_LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
CHECKSUM_MODES = ("when_supported", "when_required")

# Error codes (or HTTP statuses, for HEAD requests that carry no body) worth retrying later.
TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequests",
    "RequestTimeout", "RequestTimeoutException", "InternalError", "ServiceUnavailable",
    "ServiceUnavailableException", "500", "502", "503", "504", "429",
}
NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}
CREDENTIAL_CODES = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "InvalidToken", "ExpiredToken",
                    "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidSecurity", "AccountProblem"}
REGION_CODES = {"AuthorizationHeaderMalformed", "PermanentRedirect", "301", "IllegalLocationConstraintException"}

# A failed upload's abort is tried this many times more, after these waits (seconds), before it is given up on and
# remembered (FAILED_ABORTS_KEY) for the reaper's next sweep, which aborts it whatever its age.
ABORT_RETRY_WAITS = (0.5, 1.0, 2.0)
FAILED_ABORTS_KEY = "backups:s3:failed-aborts"  # in Django's cache (Redis): shared by every worker and the reaper
FAILED_ABORTS_TTL = 30 * 24 * 3600
FAILED_ABORTS_MAX = 10_000

# Where each configurable value comes from, for error messages; a backend that builds an S3Storage
# from other settings (Supabase) passes its own names.
DEFAULT_SETTING_NAMES = {
    "bucket": "AWS_STORAGE_BUCKET_NAME",
    "credentials": "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
    "endpoint": "AWS_S3_ENDPOINT_URL",
    "key_prefix": "AWS_S3_KEY_PREFIX",
    "region": "AWS_S3_REGION_NAME",
    "sse": "AWS_S3_SSE",
    "kms_key": "AWS_S3_SSE_KMS_KEY_ID",
    "storage_class": "AWS_S3_STORAGE_CLASS",
    "addressing_style": "AWS_S3_ADDRESSING_STYLE",
    "checksum": "AWS_S3_REQUEST_CHECKSUM_CALCULATION",
    "part_size": "BACKUPS_S3_PART_SIZE",
    "url_max_expiry": "BACKUPS_URL_MAX_EXPIRY",
    "object_lock_mode": "AWS_S3_OBJECT_LOCK_MODE",
}

# from_settings(): each constructor argument and the setting it comes from.
S3_SETTINGS: dict[str, str] = {
    "bucket": "AWS_STORAGE_BUCKET_NAME",
    "access_key_id": "AWS_ACCESS_KEY_ID",
    "secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "session_token": "AWS_SESSION_TOKEN",
    "region_name": "AWS_S3_REGION_NAME",
    "endpoint_url": "AWS_S3_ENDPOINT_URL",
    "key_prefix": "AWS_S3_KEY_PREFIX",
    "sse": "AWS_S3_SSE",
    "sse_kms_key_id": "AWS_S3_SSE_KMS_KEY_ID",
    "storage_class": "AWS_S3_STORAGE_CLASS",
    "addressing_style": "AWS_S3_ADDRESSING_STYLE",
    "request_checksum_calculation": "AWS_S3_REQUEST_CHECKSUM_CALCULATION",
    "part_size": "BACKUPS_S3_PART_SIZE",
    "url_max_expiry": "BACKUPS_URL_MAX_EXPIRY",
    "connect_timeout": "AWS_S3_CONNECT_TIMEOUT",
    "read_timeout": "AWS_S3_READ_TIMEOUT",
    "max_attempts": "AWS_S3_MAX_ATTEMPTS",
    "object_lock_mode": "AWS_S3_OBJECT_LOCK_MODE",
}

# Each setting from_settings() reads, with its default.
SETTINGS_DEFAULTS: dict[str, Any] = {
    "AWS_ACCESS_KEY_ID": "",
    "AWS_SECRET_ACCESS_KEY": "",
    "AWS_SESSION_TOKEN": "",
    "AWS_STORAGE_BUCKET_NAME": "",
    "AWS_S3_REGION_NAME": "us-east-1",
    "AWS_S3_ENDPOINT_URL": "",
    "AWS_S3_KEY_PREFIX": "backups/",
    "AWS_S3_SSE": "",
    "AWS_S3_SSE_KMS_KEY_ID": "",
    "AWS_S3_STORAGE_CLASS": "STANDARD",
    "AWS_S3_ADDRESSING_STYLE": "auto",
    "AWS_S3_REQUEST_CHECKSUM_CALCULATION": "when_supported",
    "AWS_S3_CONNECT_TIMEOUT": 10,
    "AWS_S3_READ_TIMEOUT": 60,
    "AWS_S3_MAX_ATTEMPTS": 5,
    "BACKUPS_S3_PART_SIZE": 16 * MiB,
    "BACKUPS_URL_MAX_EXPIRY": S3_MAX_URL_EXPIRY,
    "AWS_S3_OBJECT_LOCK_MODE": "",
}


_SESSION_LOCK = threading.Lock()
_SESSION: botocore.session.Session | None = None
# Configurations whose writes check() has probed in this process: a readiness probe that calls check()
# every few seconds then costs a HEAD, not a PUT and a DELETE (and a delete marker in a versioned bucket).
_PROBED_LOCK = threading.Lock()
_PROBED: set[tuple[str, ...]] = set()


def _botocore_session() -> botocore.session.Session:
    """One botocore session per process: its loaded service model makes each new client cheap (ms, not 0.2 s).

    Empty credentials fall back to its default chain (environment, ~/.aws, instance or task role).
    """
    global _SESSION
    if _SESSION is None:
        _SESSION = botocore.session.get_session()
    return _SESSION


def _error_field(exc: ClientError, name: str) -> str:
    """The error's `Code` or `Message`: under `Error`, or at the top when the store's error XML has a namespace.

    botocore recognises an S3 error document only by a root tag of exactly `Error`; a namespaced one
    (`<Error xmlns="http://s3.amazonaws.com/doc/2006-03-01/">`, as Supabase's storage-api sends) leaves
    `Error.Code` and `Error.Message` empty and puts the fields at the top of the response.
    """
    value = exc.response.get("Error", {}).get(name) or exc.response.get(name) or ""
    return str(value) if isinstance(value, str) else ""


def _error_code(exc: ClientError) -> tuple[str, int]:
    code = _error_field(exc, "Code")
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code or str(status), status


def _error_message(exc: ClientError) -> str:
    return _error_field(exc, "Message").strip()


def _error_detail(exc: ClientError) -> str:
    """'InvalidRequest, HTTP 400: why' - the store's message only when it sent one (some send none at all)."""
    code, status = _error_code(exc)
    message = _error_message(exc)
    detail = f"HTTP {status}" if code == str(status) else f"{code}, HTTP {status}" if status else code
    return f"{detail}: {message}" if message and message != "None" else detail


class S3Reader(io.RawIOBase):
    """The object's body as a stream: read(n), close(), a context manager; errors become StorageErrors."""

    def __init__(self, body: Any, key: str, errors: S3Storage) -> None:
        super().__init__()
        self._body = body
        self._key = key
        self._errors = errors

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return self._body.read(None if size is None or size < 0 else size)
        except (BotoCoreError, ClientError) as exc:
            raise self._errors.map_error(exc, f"reading {self._key}") from exc

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class S3Writer(ObjectWriter):
    """A multipart upload through bounded buffers; created lazily, aborted on any failure.

    One part uploads in a background thread while the next one fills, so the dump is not paused for
    every upload; memory is at most two parts.
    """

    def __init__(self, storage: S3Storage, key: str, object_key: str, retain_until: datetime | None = None) -> None:
        self.storage = storage
        self.key = key
        self.object_key = object_key
        self.retain_until = retain_until if storage.object_lock_mode else None
        self.part_size = storage.part_size
        self.max_parts = storage.max_parts
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.parts_started = 0
        self.size = 0
        self.done = False
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: Future | None = None

    # -- streaming ---------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.done:
            raise StorageError(f"The upload of {self.key} is already finished.")
        view = memoryview(data).cast("B")
        offset = 0
        while offset < len(view):
            if len(self.buffer) >= self.part_size:
                self._flush_part()  # only when more bytes follow: a full last part goes out on commit
            take = min(self.part_size - len(self.buffer), len(view) - offset)
            self.buffer += view[offset : offset + take]
            offset += take
        self.size += len(view)

    def _wait_inflight(self) -> None:
        """Let the part in flight finish; its error, if any, is raised here."""
        if self._inflight is not None:
            future, self._inflight = self._inflight, None
            future.result()

    def _stop_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _flush_part(self) -> None:
        part_number = self.parts_started + 1
        if part_number >= self.max_parts:
            limit = self.part_size * self.max_parts
            self.abort()
            raise StorageError(
                f"{self.key} is larger than the {limit} bytes an upload of {self.max_parts} parts of "
                f"{self.part_size} bytes can hold; raise {self.storage.setting_names['part_size']}."
            )
        try:
            if self.upload_id is None:
                response = self.storage.client.create_multipart_upload(
                    Bucket=self.storage.bucket, Key=self.object_key, **self.storage.object_args(),
                    **self.storage.lock_args(self.retain_until), **self.storage.checksum_args(),
                )
                self.upload_id = response["UploadId"]
            self._wait_inflight()
            body, self.buffer = self.buffer, bytearray()
            self.parts_started += 1
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s3-part")
            self._inflight = self._pool.submit(self._send_part, self.parts_started, body)
        except (BotoCoreError, ClientError) as exc:
            self.abort()
            raise self.storage.map_error(exc, f"uploading {self.key}") from exc

    def _upload_part(self) -> None:
        """Send the buffer as the next part, in this thread, then start a fresh buffer."""
        self.parts_started += 1
        body, self.buffer = self.buffer, bytearray()
        self._send_part(self.parts_started, body)

    def _send_part(self, part_number: int, body: bytearray) -> None:
        response = self.storage.client.upload_part(
            Bucket=self.storage.bucket, Key=self.object_key, UploadId=self.upload_id,
            PartNumber=part_number, Body=body, **self.storage.checksum_args(),
        )
        part: dict[str, Any] = {"PartNumber": part_number, "ETag": response["ETag"]}
        algorithm = self.storage.checksum_algorithm
        if algorithm and response.get(f"Checksum{algorithm}"):
            # Complete must repeat each part's checksum when the upload was created with an algorithm.
            part[f"Checksum{algorithm}"] = response[f"Checksum{algorithm}"]
        self.parts.append(part)

    # -- ending ------------------------------------------------------------------------------

    def commit(self) -> None:
        if self.done:
            raise StorageError(f"The upload of {self.key} is already finished.")
        client = self.storage.client
        try:
            if self.upload_id is None:
                client.put_object(
                    Bucket=self.storage.bucket, Key=self.object_key, Body=bytes(self.buffer),
                    **self.storage.object_args(), **self.storage.lock_args(self.retain_until),
                )
            else:
                self._wait_inflight()
                self._stop_pool()
                if self.buffer:
                    self._upload_part()
                client.complete_multipart_upload(
                    Bucket=self.storage.bucket,
                    Key=self.object_key,
                    UploadId=self.upload_id,
                    MultipartUpload={"Parts": self.parts},
                )
                if self.retain_until is not None:  # radosgw ignores the lock headers of CreateMultipartUpload
                    self.storage.put_retention(self.object_key, self.retain_until)
        except (BotoCoreError, ClientError) as exc:
            self.abort()
            raise self.storage.map_error(exc, f"uploading {self.key}") from exc
        except BaseException:
            self.abort()
            raise
        self.done = True
        self.buffer = bytearray()

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        self.buffer = bytearray()
        try:
            self._wait_inflight()
        except Exception:  # noqa: BLE001 - the upload is being thrown away anyway
            pass
        self._stop_pool()
        if self.upload_id is None:
            return
        upload_id, self.upload_id = self.upload_id, None
        self.storage.abort_upload(self.object_key, upload_id)


class S3Storage(Storage):
    """Backups in an S3 bucket (or any S3-compatible store), under `key_prefix`."""

    name = "s3"
    max_parts = MAX_PARTS

    def __init__(
        self,
        *,
        bucket: str,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        region_name: str = "us-east-1",
        endpoint_url: str | None = None,
        key_prefix: str = "backups/",
        sse: str = "",
        sse_kms_key_id: str = "",
        storage_class: str = "STANDARD",
        addressing_style: str = "auto",
        request_checksum_calculation: str = "when_supported",
        part_size: int = 16 * MiB,
        url_max_expiry: int = S3_MAX_URL_EXPIRY,
        connect_timeout: float = 10,
        read_timeout: float = 60,
        max_attempts: int = 5,
        object_lock_mode: str = "",
        setting_names: Mapping[str, str] | None = None,
    ) -> None:
        self.setting_names = {**DEFAULT_SETTING_NAMES, **(setting_names or {})}
        names = self.setting_names
        self._access_key_id = access_key_id or ""
        self.bucket = bucket or ""
        self.region_name = region_name or "us-east-1"
        self.endpoint_url = endpoint_url or None
        self.key_prefix = key_prefix or ""
        if self.key_prefix and not self.key_prefix.endswith("/"):
            self.key_prefix += "/"
        if self.key_prefix.startswith("/"):
            raise StorageError(f"{names['key_prefix']} must not start with '/'.")

        sse_key = (sse or "").strip().lower()
        if sse_key not in SSE_CHOICES:
            raise StorageError(f"{names['sse']}={sse!r} is not one of AES256, aws:kms, none or empty.")
        self.sse = SSE_CHOICES[sse_key]
        self.sse_kms_key_id = sse_kms_key_id or ""
        if self.sse_kms_key_id and self.sse != "aws:kms":
            raise StorageError(f"{names['kms_key']} is set but {names['sse']} is not aws:kms.")
        self.storage_class = (storage_class or "STANDARD").strip().upper()
        lock_mode = (object_lock_mode or "").strip().upper()
        if lock_mode and lock_mode not in OBJECT_LOCK_MODES:
            raise StorageError(f"{names['object_lock_mode']}={object_lock_mode!r} is not GOVERNANCE, COMPLIANCE or "
                               "empty.")
        self.object_lock_mode = lock_mode

        if addressing_style not in ADDRESSING_STYLES:
            raise StorageError(f"{names['addressing_style']}={addressing_style!r} is not one of auto, path or virtual.")
        if request_checksum_calculation not in CHECKSUM_MODES:
            raise StorageError(
                f"{names['checksum']}={request_checksum_calculation!r} is not when_supported or when_required."
            )
        part_size = int(part_size)
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise StorageError(f"{names['part_size']}={part_size} must be between {MIN_PART_SIZE} (5 MiB) and "
                               f"{MAX_PART_SIZE} (5 GiB) bytes.")
        self.part_size = part_size
        url_max_expiry = int(url_max_expiry)
        if url_max_expiry < 1:
            raise StorageError(f"{names['url_max_expiry']} must be at least 1 second.")
        self.url_max_expiry = min(url_max_expiry, S3_MAX_URL_EXPIRY)

        self.request_checksum_calculation = request_checksum_calculation
        self.checksum_algorithm = "CRC32" if request_checksum_calculation == "when_supported" else ""
        self.config = Config(
            region_name=self.region_name,
            signature_version="s3v4",
            s3={"addressing_style": addressing_style},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # Every attempt, the first included, like AWS_MAX_ATTEMPTS; Config's "max_attempts" would count retries.
            retries={"mode": "standard", "total_max_attempts": max(1, int(max_attempts))},
            request_checksum_calculation=request_checksum_calculation,
            response_checksum_validation=request_checksum_calculation,
        )
        with _SESSION_LOCK:  # botocore sessions are not thread-safe; clients are
            self.client = _botocore_session().create_client(
                "s3",
                region_name=self.region_name,
                endpoint_url=self.endpoint_url,
                aws_access_key_id=access_key_id or None,
                aws_secret_access_key=secret_access_key or None,
                aws_session_token=session_token or None,
                config=self.config,
            )

    @classmethod
    def from_settings(cls, settings: Any = None, **overrides: Any) -> S3Storage:
        """Build one from Django settings (AWS_*, BACKUPS_S3_PART_SIZE, BACKUPS_URL_MAX_EXPIRY)."""
        kwargs = kwargs_from_settings(settings, S3_SETTINGS, SETTINGS_DEFAULTS)
        kwargs.update(overrides)
        return cls(**kwargs)

    @property
    def max_object_size(self) -> int:
        """The largest object one upload can hold: part_size * 10,000."""
        return self.part_size * self.max_parts

    # -- keys and arguments ------------------------------------------------------------------

    def object_key(self, key: str) -> str:
        """The S3 key for `key`, refusing keys that could name something outside the prefix."""
        if (
            not isinstance(key, str) or not key or "\x00" in key or "\\" in key or key.startswith("/")
            or posixpath.normpath(key) != key or key.split("/")[0] in {".", ".."} or key.endswith("/")
        ):
            raise StorageError(f"Key {key!r} is not a valid backup key.")
        return self.key_prefix + key

    def _strip_prefix(self, object_key: str) -> str:
        return object_key[len(self.key_prefix):] if object_key.startswith(self.key_prefix) else object_key

    def checksum_args(self) -> dict[str, str]:
        """ChecksumAlgorithm for CreateMultipartUpload / UploadPart, as s3transfer does (when_supported only)."""
        return {"ChecksumAlgorithm": self.checksum_algorithm} if self.checksum_algorithm else {}

    def lock_args(self, retain_until: datetime | None) -> dict[str, Any]:
        """ObjectLockMode and ObjectLockRetainUntilDate for PutObject / CreateMultipartUpload (when locking)."""
        if not self.object_lock_mode or retain_until is None:
            return {}
        return {"ObjectLockMode": self.object_lock_mode, "ObjectLockRetainUntilDate": retain_until}

    def put_retention(self, object_key: str, until: datetime) -> None:
        """Set the object's retention (mode and retain-until) with PutObjectRetention; botocore adds Content-MD5."""
        self.client.put_object_retention(Bucket=self.bucket, Key=object_key,
                                         Retention={"Mode": self.object_lock_mode, "RetainUntilDate": until})

    def lock_until(self, key: str) -> datetime | None:
        """The object's retain-until date, or None when it is not locked (or the bucket locks nothing)."""
        try:
            response = self.client.get_object_retention(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            code = _error_code(exc)[0]
            if code in {"ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration"} | NOT_FOUND_CODES:
                return None
            raise self.map_error(exc, f"reading the retention of {key}") from exc
        except BotoCoreError as exc:
            raise self.map_error(exc, f"reading the retention of {key}") from exc
        until = response.get("Retention", {}).get("RetainUntilDate")
        return until.astimezone(UTC) if until else None

    def extend_lock(self, key: str, until: datetime) -> None:
        """Keep the object locked until at least `until`; an earlier date than its current one changes nothing
        (COMPLIANCE forbids shortening, and GOVERNANCE would need a bypass this app never asks for)."""
        if not self.object_lock_mode:
            return
        current = self.lock_until(key)
        if current is not None and current >= until:
            return
        try:
            self.put_retention(self.object_key(key), until)
        except (BotoCoreError, ClientError) as exc:
            raise self.map_error(exc, f"extending the lock of {key}") from exc

    def object_args(self) -> dict[str, str]:
        """SSE and storage class for PutObject / CreateMultipartUpload."""
        args: dict[str, str] = {}
        if self.sse:
            args["ServerSideEncryption"] = self.sse
        if self.sse_kms_key_id:
            args["SSEKMSKeyId"] = self.sse_kms_key_id
        if self.storage_class and self.storage_class != "STANDARD":
            # STANDARD is S3's default: not sending it keeps stores that reject the header happy.
            args["StorageClass"] = self.storage_class
        return args

    # -- errors ------------------------------------------------------------------------------

    def map_error(self, exc: BaseException, action: str) -> StorageError:
        """A StorageError (or StorageTransientError / ObjectNotFound) for a botocore exception."""
        names = self.setting_names
        where = self.endpoint_url or "AWS S3"
        if isinstance(exc, SSLError):
            return StorageError(f"TLS to {where} failed while {action}; check {names['endpoint']}.")
        if isinstance(exc, BotoConnectionError):
            return StorageTransientError(
                f"Cannot reach the S3 endpoint {where} while {action}; check {names['endpoint']}."
            )
        if isinstance(exc, (HTTPClientError, IncompleteReadError, ChecksumError)):
            return StorageTransientError(f"The connection to {where} failed while {action} ({exc}).")
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return StorageError(f"No S3 credentials found while {action}; set {names['credentials']}.")
        if isinstance(exc, ClientError):
            code, status = _error_code(exc)
            if code in TRANSIENT_CODES or status >= 500 or status == 429:
                return StorageTransientError(f"S3 answered {code} while {action}; try again later.")
            if code == "NoSuchBucket":
                return StorageError(f"Bucket {self.bucket} does not exist ({names['bucket']}).")
            if code in NOT_FOUND_CODES:
                return ObjectNotFound(f"No backup object while {action}.")
            if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}:
                return StorageError(
                    f"S3 refused the credentials ({code}) while {action}; check {names['credentials']}."
                )
            if code in CREDENTIAL_CODES:
                return StorageError(
                    f"S3 denied access to bucket {self.bucket} ({code}) while {action}; check {names['credentials']}."
                )
            if code in REGION_CODES:
                return StorageError(f"Bucket {self.bucket} is in another region ({code}); check {names['region']}.")
            if "KMS" in code:
                return StorageError(f"S3 refused the KMS key ({code}) while {action}; check {names['kms_key']}.")
            if code == "InvalidStorageClass":
                return StorageError(
                    f"S3 refused the storage class {self.storage_class}; check {names['storage_class']}."
                )
            if code in {"XAmzContentSHA256Mismatch", "BadDigest", "InvalidDigest", "NotImplemented"} or (
                "checksum" in str(exc).lower()
            ):
                return StorageError(
                    f"S3 refused the request checksums ({code}) while {action}; "
                    f"set {names['checksum']}=when_required."
                )
            return StorageError(f"S3 refused {action} ({_error_detail(exc)}).")
        return StorageError(f"S3 failed while {action} ({exc}).")

    # -- the interface -----------------------------------------------------------------------

    def open_write(self, key: str, *, retain_until: datetime | None = None) -> ObjectWriter:
        return S3Writer(self, key, self.object_key(key), retain_until)

    def open_read(self, key: str, offset: int = 0) -> BinaryIO:
        object_key = self.object_key(key)
        ranged = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=object_key, **ranged)
        except (BotoCoreError, ClientError) as exc:
            error = self.map_error(exc, f"reading {key}")
            if isinstance(error, ObjectNotFound):
                raise ObjectNotFound(f"No backup object at {key}.") from None
            raise error from exc
        return S3Reader(response["Body"], key, self)  # type: ignore[return-value]

    def delete(self, key: str) -> None:
        if self.object_lock_mode:
            self._delete_versions(key)
            return
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))
        except (BotoCoreError, ClientError) as exc:
            error = self.map_error(exc, f"deleting {key}")
            if not isinstance(error, ObjectNotFound):
                raise error from exc

    def _delete_versions(self, key: str) -> None:
        """Delete every version (and delete marker) of the key: in a versioned, lock-enabled bucket a plain delete
        only hides the object. ObjectLocked, with the retain-until date, for a version still locked."""
        object_key = self.object_key(key)
        try:
            pages = self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=object_key)
            versions = [item for page in pages for item in (*page.get("Versions", ()), *page.get("DeleteMarkers", ()))
                        if item["Key"] == object_key]
        except (BotoCoreError, ClientError) as exc:
            raise self.map_error(exc, f"listing the versions of {key}") from exc
        for item in versions:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=object_key, VersionId=item["VersionId"])
            except ClientError as exc:
                code, status = _error_code(exc)
                if code in NOT_FOUND_CODES or code == "NoSuchVersion":
                    continue
                if status == 403 or code == "AccessDenied":  # a locked version, or credentials that may not delete
                    until = self._version_lock(object_key, item["VersionId"])
                    if (until is not None and until > datetime.now(UTC)) or "lock" in _error_message(exc).lower():
                        when = f" until {until.isoformat()}" if until else ""
                        raise ObjectLocked(
                            f"{key} is locked{when} by S3 Object Lock ({self.setting_names['object_lock_mode']}="
                            f"{self.object_lock_mode}); it can be deleted once that date has passed.",
                            until=until) from None
                raise self.map_error(exc, f"deleting {key}") from exc
            except BotoCoreError as exc:
                raise self.map_error(exc, f"deleting {key}") from exc

    def _version_lock(self, object_key: str, version_id: str) -> datetime | None:
        try:
            response = self.client.get_object_retention(Bucket=self.bucket, Key=object_key, VersionId=version_id)
        except (BotoCoreError, ClientError):
            return None
        until = response.get("Retention", {}).get("RetainUntilDate")
        return until.astimezone(UTC) if until else None

    def list(self, prefix: str) -> Iterator[StoredObject]:
        if prefix.startswith("/") or "\x00" in prefix:
            raise StorageError(f"Prefix {prefix!r} is not a valid backup prefix.")
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key_prefix + prefix):
                for item in page.get("Contents", ()):
                    yield StoredObject(
                        key=self._strip_prefix(item["Key"]),
                        size=int(item["Size"]),
                        last_modified=item["LastModified"].astimezone(UTC),
                        storage_class=item.get("StorageClass", "STANDARD"),
                    )
        except (BotoCoreError, ClientError) as exc:
            raise self.map_error(exc, f"listing {prefix}") from exc

    def stat(self, key: str) -> StoredObject | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except (BotoCoreError, ClientError) as exc:
            error = self.map_error(exc, f"checking {key}")
            if isinstance(error, ObjectNotFound):
                return None
            raise error from exc
        return StoredObject(
            key=key,
            size=int(head["ContentLength"]),
            last_modified=head["LastModified"].astimezone(UTC),
            storage_class=head.get("StorageClass", "STANDARD"),
        )

    def url(self, key: str, expires_in: int, *, bound: dict | None = None) -> str:
        """A presigned GET, valid 1..min(BACKUPS_URL_MAX_EXPIRY, 7 days) seconds."""
        valid = isinstance(expires_in, int) and not isinstance(expires_in, bool)
        if not valid or not 1 <= expires_in <= self.url_max_expiry:
            raise ValueError(
                f"expires_in must be a whole number of seconds from 1 to {self.url_max_expiry} "
                f"({self.setting_names['url_max_expiry']}, at most 7 days); got {expires_in!r}."
            )
        try:
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self.object_key(key)}, ExpiresIn=expires_in
            )
        except (BotoCoreError, ClientError) as exc:
            raise self.map_error(exc, f"signing a link to {key}") from exc

    def check(self) -> None:
        names = self.setting_names
        if not self.bucket:
            raise StorageError(f"{names['bucket']} is not set.")
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            if isinstance(exc, ClientError):
                code, status = _error_code(exc)
                if status == 404 or code in {"NoSuchBucket", "404", "NotFound"}:
                    raise StorageError(f"Bucket {self.bucket} does not exist ({names['bucket']}).") from None
                if status == 403:
                    raise StorageError(
                        f"S3 denied access to bucket {self.bucket}; check {names['credentials']}."
                    ) from None
                if status in (301, 400) and code in REGION_CODES | {"400", "301"}:
                    raise StorageError(
                        f"Bucket {self.bucket} is not reachable in region {self.region_name}; "
                        f"check {names['region']}."
                    ) from None
            raise self.map_error(exc, f"checking bucket {self.bucket}") from None
        if self.object_lock_mode:
            self.check_object_lock()
        probe = (self.endpoint_url or "", self.region_name, self._access_key_id, self.bucket, self.key_prefix,
                 self.sse, self.sse_kms_key_id, self.storage_class, self.request_checksum_calculation,
                 self.object_lock_mode)
        with _PROBED_LOCK:
            if probe in _PROBED:
                return
        self._check_writes()
        with _PROBED_LOCK:
            _PROBED.add(probe)

    def check_object_lock(self) -> None:
        """Refuse a lock mode on a bucket created without Object Lock (it cannot be turned on for most stores
        afterwards): every backup would be written unlocked, or refused, while the settings promise a lock."""
        name = self.setting_names["object_lock_mode"]
        try:
            response = self.client.get_object_lock_configuration(Bucket=self.bucket)
            enabled = response.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
        except ClientError as exc:
            code = _error_code(exc)[0]
            if code not in {"ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration",
                            "InvalidBucketState", "NotImplemented", "InvalidRequest"}:
                raise self.map_error(exc, f"reading the Object Lock configuration of {self.bucket}") from None
            enabled = False
        except BotoCoreError as exc:
            raise self.map_error(exc, f"reading the Object Lock configuration of {self.bucket}") from None
        if not enabled:
            raise StorageError(
                f"{name}={self.object_lock_mode} needs a bucket with S3 Object Lock, and bucket {self.bucket} has "
                f"none; create the bucket with Object Lock enabled, or leave {name} empty.")

    def _check_writes(self) -> None:
        """Store and delete a tiny object with the configured encryption and storage class.

        A HEAD of the bucket passes whatever the store thinks of the headers every upload carries: a
        refused or silently ignored encryption mode would only show at the first backup.
        """
        names = self.setting_names
        key = f"{self.key_prefix}{CHECK_PREFIX}{uuid.uuid4().hex}"
        args = self.object_args()
        try:
            response = self.client.put_object(Bucket=self.bucket, Key=key, Body=b"check", **args)
        except (BotoCoreError, ClientError) as exc:
            raise self._probe_error(exc, key, args) from None
        try:
            if self.sse and response.get("ServerSideEncryption") != self.sse:
                raise StorageError(
                    f"S3 stored the check object without the server-side encryption {names['sse']}={self.sse} "
                    f"asks for (the store ignores it); leave {names['sse']} empty to use the bucket's default "
                    f"encryption, or enable {self.sse} on the store."
                )
        finally:
            try:  # by version in a versioned (lock-enabled) bucket, where a plain delete leaves the probe behind
                version = {"VersionId": response["VersionId"]} if response.get("VersionId") else {}
                self.client.delete_object(Bucket=self.bucket, Key=key, **version)
            except (BotoCoreError, ClientError) as exc:
                raise self.map_error(exc, f"deleting the check object {key}") from None

    def _probe_error(self, exc: BaseException, key: str, args: dict[str, str]) -> StorageError:
        """Which setting made the store refuse the probe: encryption, storage class, or what map_error says."""
        names = self.setting_names
        error = self.map_error(exc, f"storing the check object {key}")
        if not isinstance(exc, ClientError) or isinstance(error, StorageTransientError):
            return error
        suspects = []
        if self.sse:
            suspects.append("sse")
        if "StorageClass" in args:
            suspects.append("storage_class")
        for suspect in suspects:  # the store accepts the probe without this header: the header is the fault
            without = {name: value for name, value in args.items()
                       if (suspect == "sse") != (name in ("ServerSideEncryption", "SSEKMSKeyId"))}
            try:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=b"check", **without)
                self.client.delete_object(Bucket=self.bucket, Key=key)
            except (BotoCoreError, ClientError):
                continue
            detail = _error_detail(exc)
            if suspect == "storage_class":
                return StorageError(f"S3 refused the storage class {names['storage_class']}={self.storage_class} "
                                    f"({detail}); use one the store offers, or STANDARD.")
            if self.sse_kms_key_id:
                return StorageError(
                    f"S3 refused server-side encryption {names['sse']}={self.sse} with "
                    f"{names['kms_key']}={self.sse_kms_key_id} ({detail}); check {names['kms_key']}, or leave "
                    f"{names['sse']} empty to use the bucket's default encryption."
                )
            return StorageError(
                f"S3 refused server-side encryption {names['sse']}={self.sse} ({detail}); set {names['sse']} to "
                f"a mode the store supports, or leave it empty to use the bucket's default encryption."
            )
        return error

    # -- housekeeping ------------------------------------------------------------------------

    def abort_upload(self, object_key: str, upload_id: str) -> bool:
        """Abort one multipart upload a writer gave up on, never raising (the error that made it give up wins).

        Tried again after each of ABORT_RETRY_WAITS (the store's connection may be resetting, which is often
        why the upload failed); if every try fails, the upload is remembered for the reaper's next sweep
        (abort_remembered_uploads), so it is not left open until the age-based sweep hours later.
        """
        for wait in (*ABORT_RETRY_WAITS, None):
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=object_key, UploadId=upload_id)
                return True
            except ClientError as exc:
                if _error_code(exc)[0] == "NoSuchUpload":
                    return True  # already gone (an earlier try went through and its answer was lost)
                error: BaseException = exc
            except BotoCoreError as exc:
                error = exc
            if wait is not None:
                time.sleep(wait)
        logger.warning("could not abort the multipart upload %s of %s (%s); the reaper's next sweep will",
                       upload_id, object_key, error)
        self._remember_failed_abort(object_key, upload_id)
        return False

    def _failed_aborts_scope(self) -> tuple[str, str]:
        return self.endpoint_url or "", self.bucket

    def _update_failed_aborts(self, change: Any) -> list[dict[str, str]] | None:
        """Apply `change(entries) -> entries` to the remembered failed aborts under a short cache lock; the new
        list, or None when the cache cannot be used (then the age-based sweep still finds the uploads)."""
        try:
            from django.core.cache import cache

            lock = f"{FAILED_ABORTS_KEY}:lock"
            deadline = time.monotonic() + 5
            while not cache.add(lock, "1", timeout=30) and time.monotonic() < deadline:
                time.sleep(0.05)
            try:
                entries = change(list(cache.get(FAILED_ABORTS_KEY) or []))[-FAILED_ABORTS_MAX:]
                cache.set(FAILED_ABORTS_KEY, entries, timeout=FAILED_ABORTS_TTL)
            finally:
                cache.delete(lock)
            return entries
        except Exception as exc:  # noqa: BLE001 - no cache (or it is down): the age-based sweep remains
            logger.warning("could not remember or read the failed multipart upload aborts: %s", exc)
            return None

    def _remember_failed_abort(self, object_key: str, upload_id: str) -> None:
        endpoint, bucket = self._failed_aborts_scope()
        entry = {"endpoint": endpoint, "bucket": bucket, "key": object_key, "upload_id": upload_id,
                 "at": datetime.now(UTC).isoformat()}
        self._update_failed_aborts(lambda entries: [e for e in entries if e != entry] + [entry])

    def remembered_failed_aborts(self) -> list[dict[str, str]]:
        """The uploads of this bucket whose abort failed and that the next sweep aborts."""
        scope = self._failed_aborts_scope()
        entries = self._update_failed_aborts(lambda entries: entries) or []
        return [e for e in entries if (e.get("endpoint"), e.get("bucket")) == scope]

    def abort_remembered_uploads(self) -> int:
        """Abort the uploads whose abort failed when their writer gave up on them, whatever their age; the count.

        An upload aborted (or already gone) is forgotten; one whose abort fails again is kept for the next sweep.
        """
        done: list[dict[str, str]] = []
        aborted = 0
        for entry in self.remembered_failed_aborts():
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=entry["key"], UploadId=entry["upload_id"])
            except ClientError as exc:
                if _error_code(exc)[0] != "NoSuchUpload":
                    logger.warning("could not abort the multipart upload %s of %s: %s", entry["upload_id"],
                                   entry["key"], exc)
                    continue
                done.append(entry)
                continue
            except BotoCoreError as exc:
                logger.warning("could not abort the multipart upload %s of %s: %s", entry["upload_id"],
                               entry["key"], exc)
                continue
            done.append(entry)
            aborted += 1
            logger.info("aborted the multipart upload %s of %s left by a failed abort", entry["upload_id"],
                        entry["key"])
        if done:
            self._update_failed_aborts(lambda entries: [e for e in entries if e not in done])
        return aborted

    def abort_incomplete_uploads(self, prefix: str = "", older_than: timedelta | datetime = timedelta(days=1),
                                 keep: Collection[str] = ()) -> int:
        """Abort multipart uploads under `prefix` started before `older_than` (an age or a cutoff); the count.

        Uploads to a key in `keep` (backups running now) are left alone whatever their date says: the store's
        clock is not ours, and some stores report no real start time.
        """
        if isinstance(older_than, timedelta):
            cutoff = datetime.now(UTC) - older_than
        else:
            cutoff = older_than if older_than.tzinfo else older_than.replace(tzinfo=UTC)
        full_prefix = self.key_prefix + prefix
        aborted = 0
        paginator = self.client.get_paginator("list_multipart_uploads")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                for upload in page.get("Uploads", ()):
                    if not upload["Key"].startswith(full_prefix) or upload["Initiated"] >= cutoff:
                        continue
                    if upload["Key"][len(self.key_prefix):] in keep:
                        continue
                    try:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                    except ClientError as exc:
                        if _error_code(exc)[0] != "NoSuchUpload":
                            raise
                        continue
                    aborted += 1
        except (BotoCoreError, ClientError) as exc:
            raise self.map_error(exc, f"aborting old uploads under {prefix or '/'}") from exc
        return aborted
