"""Supabase Storage: objects are `<schema>/<file>` in one private bucket (SUPABASE_BUCKET, `backups` by default).

Reads, listings, deletes, stats and signed links use Supabase Storage's REST API (the `supabase` client, plus
plain httpx for streamed downloads). Writes take one of two paths:

* With SUPABASE_S3_ENDPOINT, SUPABASE_S3_ACCESS_KEY_ID and SUPABASE_S3_SECRET_ACCESS_KEY set, every write is an
  S3 multipart upload to Supabase's S3-compatible endpoint (an `S3Storage` with path-style addressing, no key
  prefix, no SSE headers): memory stays at about one part (`BACKUPS_S3_PART_SIZE`) and size is bounded only by
  the project's upload size limit.
* Without them, writes go through the standard upload (`POST /storage/v1/object/<bucket>/<path>`), streamed as a
  chunked request body from a bounded queue. Supabase Storage checks a standard upload's size only through its
  Content-Length, so a chunked body passes whatever its size: the cap is enforced here, at SUPABASE_UPLOAD_LIMIT
  (50 MiB by default, Supabase's own default) or the bucket's file size limit if lower, and a larger stream is
  aborted with a message naming the setting and the S3 settings to use instead.

Keys are limited to Supabase Storage's S3-safe characters (it answers anything else with 400 InvalidKey), without
`?`, which it stores but which cuts its signed links short.

Either way nothing is visible under the key before `commit()`, and a failed or aborted upload leaves no object.
"""

from __future__ import annotations

import base64
import io
import json
import posixpath
import queue
import ssl
import threading
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, BinaryIO

import httpx
from botocore.exceptions import BotoCoreError, ClientError
from storage3.exceptions import StorageApiError

from .base import (
    ObjectNotFound,
    ObjectWriter,
    Storage,
    StorageError,
    StorageTransientError,
    StoredObject,
    kwargs_from_settings,
)
from .s3 import S3Storage, _error_code, _error_message

MiB = 1024 * 1024
DEFAULT_UPLOAD_LIMIT = 50 * MiB  # Supabase's default FILE_SIZE_LIMIT (52428800), the standard upload's cap
DEFAULT_URL_MAX_EXPIRY = 7 * 24 * 3600
LIST_PAGE_SIZE = 1000  # Supabase caps a page at 1,500 entries
STREAM_CHUNK = MiB  # the unit the upload queue carries
QUEUE_CHUNKS = 4  # an upload holds at most this many chunks (plus one being sent) in memory
ABORT_WAIT_SECONDS = 10
UPLOAD_TOKEN_FIELD = "backups-upload-token"  # user metadata naming the upload, to clean up only our own object
FOLDER_PLACEHOLDER = ".emptyFolderPlaceholder"  # what the dashboard writes to make an empty folder

UPLOAD_LIMIT_MESSAGE = (
    "{key} is larger than SUPABASE_UPLOAD_LIMIT ({limit} bytes), the cap of Supabase's standard upload; set "
    "SUPABASE_S3_ENDPOINT, SUPABASE_S3_ACCESS_KEY_ID and SUPABASE_S3_SECRET_ACCESS_KEY to write backups through "
    "Supabase's S3 endpoint instead."
)
BUCKET_LIMIT_MESSAGE = (
    "{key} is larger than bucket {bucket}'s file size limit ({limit} bytes); raise it in the Supabase dashboard "
    "(Storage, the bucket's settings) or choose another SUPABASE_BUCKET."
)
SIZE_LIMIT_MESSAGE = (
    "Supabase refused {action}: the object is larger than the project's upload size limit or the bucket's file "
    "size limit (raise them in the Supabase dashboard's Storage settings)."
)
# Supabase Storage's key characters (src/storage/limits.ts, VALID_OBJECT_KEY) but `?`: it stores such a key, but
# the signed link it returns is not encoded (`/object/sign/<bucket>/<key>?token=`), so the link's path ends there.
KEY_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_/!.*'() &$=@;:+,-")
REGION_HINT = (
    "SUPABASE_S3_REGION={region!r} must be the project's region (shown beside the S3 access keys), us-east-1 or "
    "auto: Supabase signs with its own region otherwise"
)
ANON_KEY_MESSAGE = (
    "Supabase's row-level security refused {action} ({message}): SUPABASE_KEY is most likely the project's anon "
    "(publishable) key; set it to the service_role (secret) key, which backups need."
)
S3_SETTINGS = ("SUPABASE_S3_ENDPOINT", "SUPABASE_S3_ACCESS_KEY_ID", "SUPABASE_S3_SECRET_ACCESS_KEY")

# Error messages of the S3Storage used for writes name these settings instead of the AWS_* ones.
S3_SETTING_NAMES = {
    "bucket": "SUPABASE_BUCKET",
    "credentials": "SUPABASE_S3_ACCESS_KEY_ID/SUPABASE_S3_SECRET_ACCESS_KEY",
    "endpoint": "SUPABASE_S3_ENDPOINT",
    "key_prefix": "SUPABASE_BUCKET",  # always empty: objects sit at the bucket's root
    "region": "SUPABASE_S3_REGION",
    "sse": "SUPABASE_S3_ENDPOINT",  # never sent to Supabase
    "kms_key": "SUPABASE_S3_ENDPOINT",
    "storage_class": "SUPABASE_S3_ENDPOINT",
    "addressing_style": "SUPABASE_S3_ENDPOINT",
    "checksum": "SUPABASE_S3_ENDPOINT",
    "part_size": "BACKUPS_S3_PART_SIZE",
    "url_max_expiry": "BACKUPS_URL_MAX_EXPIRY",
}

# from_settings(): each constructor argument and the setting it comes from.
SUPABASE_SETTINGS: dict[str, str] = {
    "url": "SUPABASE_URL",
    "key": "SUPABASE_KEY",
    "bucket": "SUPABASE_BUCKET",
    "s3_endpoint": "SUPABASE_S3_ENDPOINT",
    "s3_region": "SUPABASE_S3_REGION",
    "s3_access_key_id": "SUPABASE_S3_ACCESS_KEY_ID",
    "s3_secret_access_key": "SUPABASE_S3_SECRET_ACCESS_KEY",
    "upload_limit": "SUPABASE_UPLOAD_LIMIT",
    "part_size": "BACKUPS_S3_PART_SIZE",
    "url_max_expiry": "BACKUPS_URL_MAX_EXPIRY",
}

# Each setting from_settings() reads, with its default.
SETTINGS_DEFAULTS: dict[str, Any] = {
    "SUPABASE_URL": "",
    "SUPABASE_KEY": "",
    "SUPABASE_BUCKET": "backups",
    "SUPABASE_S3_ENDPOINT": "",
    "SUPABASE_S3_REGION": "us-east-1",
    "SUPABASE_S3_ACCESS_KEY_ID": "",
    "SUPABASE_S3_SECRET_ACCESS_KEY": "",
    "SUPABASE_UPLOAD_LIMIT": DEFAULT_UPLOAD_LIMIT,
    "BACKUPS_S3_PART_SIZE": 16 * MiB,
    "BACKUPS_URL_MAX_EXPIRY": DEFAULT_URL_MAX_EXPIRY,
}

_END = object()  # queue sentinels: the body is complete / the upload is abandoned
_ABORT = object()


class _UploadAborted(Exception):
    """Raised inside the request body generator to cut the request off (nothing gets committed)."""


def _check_shape(key: str) -> None:
    """Refuse keys that could name something outside `<schema>/<file>` (the rules of S3, and no `%`)."""
    if (
        not isinstance(key, str) or not key or "\x00" in key or "\\" in key or "%" in key or key.startswith("/")
        or posixpath.normpath(key) != key or key.split("/")[0] in {".", ".."} or key.endswith("/")
    ):
        raise StorageError(f"Key {key!r} is not a valid backup key.")


def refused_characters(key: str) -> str:
    """The characters of `key` that Supabase Storage refuses (or whose signed links break), in order, once each."""
    return "".join(dict.fromkeys(c for c in key if c not in KEY_CHARACTERS))


def check_key(key: str) -> str:
    """`key` if it is a plain `<schema>/<file>`-style key Supabase can hold; StorageError otherwise.

    Tenant keys (backups/core/naming.py) are lowercase letters, digits, `_`, `-`, `.` and `/` only; the check is for
    keys that arrive from elsewhere, refused here with a sentence rather than by the server's 400 InvalidKey.
    """
    _check_shape(key)
    if refused := refused_characters(key):
        raise StorageError(
            f"Key {key!r} is not a valid backup key for Supabase Storage: it refuses {refused!r} (keys may use "
            f"only ASCII letters, digits, spaces and _ / ! . * ' ( ) & $ = @ ; : + , -)."
        )
    return key


def _check_read_key(key: str) -> str:
    """`key` for a read, stat, delete or link: one Supabase cannot hold names no object (ObjectNotFound)."""
    _check_shape(key)
    if refused := refused_characters(key):
        raise ObjectNotFound(f"No backup object at {key!r}: Supabase Storage cannot hold a key with {refused!r}.")
    return key


def _parse_time(value: Any) -> datetime:
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.fromtimestamp(0, UTC)


def _error_fields(response: httpx.Response) -> tuple[int, str, str, str, bool]:
    """(logical status, code, error, message, whether the body was JSON) of an error response.

    Supabase Storage answers most errors with HTTP 400 and the real status in the body's `statusCode`;
    the API gateway answers 401s with just `{"message": ...}`.
    """
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError, httpx.ResponseNotRead):
        return response.status_code, "", "", "", False
    if not isinstance(body, dict):
        return response.status_code, "", "", "", True
    status = response.status_code
    try:
        if body.get("statusCode") is not None:
            status = int(body["statusCode"])
    except (TypeError, ValueError):
        pass
    return status, str(body.get("code") or ""), str(body.get("error") or ""), str(body.get("message") or ""), True


def _is_missing_bucket(status: int, code: str, error: str, message: str) -> bool:
    return status == 404 and (code == "NoSuchBucket" or "bucket not found" in f"{error} {message}".lower())


def _is_missing_object(status: int, code: str, error: str, message: str) -> bool:
    return status == 404 and (code == "NoSuchKey" or error == "not_found" or message == "Object not found")


def _is_tls_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) or "[SSL" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _status_response(exc: BaseException) -> httpx.Response | None:
    """The HTTP response behind a storage3 error (it chains the httpx.HTTPStatusError)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, httpx.HTTPStatusError):
            return seen.response
        seen = seen.__cause__ or seen.__context__
    return None


class _SupabaseS3Storage(S3Storage):
    """S3Storage against Supabase's S3 endpoint: only the size-limit error reads differently."""

    name = "supabase"

    def map_error(self, exc: BaseException, action: str) -> StorageError:
        if isinstance(exc, ClientError):
            code, status = _error_code(exc)
            if code == "EntityTooLarge" or status == 413:
                return StorageError(SIZE_LIMIT_MESSAGE.format(action=action))
            if code == "SignatureDoesNotMatch":
                return StorageError(
                    f"Supabase's S3 endpoint refused the request signature while {action}; check "
                    f"SUPABASE_S3_SECRET_ACCESS_KEY, and {REGION_HINT.format(region=self.region_name)}."
                )
        return super().map_error(exc, action)


class SupabaseReader(io.RawIOBase):
    """A streamed download: read(n) returns at most n bytes; errors become StorageErrors."""

    def __init__(self, response: httpx.Response, key: str, storage: SupabaseStorage) -> None:
        super().__init__()
        self._response = response
        self._chunks = response.iter_bytes()
        self._pending = b""
        self._key = key
        self._storage = storage

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> bytes:
        try:
            for chunk in self._chunks:
                if chunk:
                    return chunk
        except httpx.HTTPError as exc:
            raise self._storage.transport_error(exc, f"reading {self._key}") from exc
        return b""

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        if size is None or size < 0:
            return self.readall()
        if size == 0:
            return b""
        if not self._pending:
            self._pending = self._next_chunk()
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    def readall(self) -> bytes:
        parts = [self._pending]
        self._pending = b""
        while chunk := self._next_chunk():
            parts.append(chunk)
        return b"".join(parts)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._response.close()
        super().close()


class SupabaseUploadWriter(ObjectWriter):
    """A standard upload (REST) streamed from a bounded queue; at most SUPABASE_UPLOAD_LIMIT bytes.

    The first MiB is held back: an object that ends within it (a manifest) goes out as one plain POST. Past it,
    a background thread sends a chunked POST whose body generator pulls from a queue of QUEUE_CHUNKS chunks, so
    `write()` blocks rather than buffering. `abort()` makes the generator raise: the request is cut off before
    its end, and Supabase commits nothing from an incomplete body.

    Supabase checks the size limit only on a body with a Content-Length (the one-POST case); a chunked body is
    stored whatever its size, so the limit is counted here, in `write()`, before any byte past it is sent.
    """

    def __init__(self, storage: SupabaseStorage, key: str, path: str) -> None:
        self.storage = storage
        self.key = key
        self.path = path
        self.limit, self.limit_message = storage.write_limit(key)
        self.token = uuid.uuid4().hex
        self.size = 0
        self.done = False
        self._head = bytearray()  # bytes held back until we know whether the object is small
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_CHUNKS)
        self._thread: threading.Thread | None = None
        self._response: httpx.Response | None = None
        self._error: BaseException | None = None
        self._body_complete = False  # the whole body went out: the server may have committed it

    # -- the request ---------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        metadata = base64.b64encode(json.dumps({UPLOAD_TOKEN_FIELD: self.token}).encode()).decode()
        return {
            **self.storage.auth_headers,
            "Content-Type": "application/octet-stream",
            "Cache-Control": "no-cache",
            "x-upsert": "false",
            "x-metadata": metadata,
            # storage-api answers a refused upload (409 the object exists, 413, 400 InvalidKey) without reading
            # its body and keeps the connection open, but reads nothing more from it: the next request sent on it
            # would wait for the read timeout. An upload's connection is therefore never reused.
            "Connection": "close",
        }

    def _body(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if item is _END:
                self._body_complete = True
                return
            if item is _ABORT:
                raise _UploadAborted()
            yield item

    def _send(self, content: Any) -> None:
        try:
            request = self.storage.http.build_request(
                "POST", self.storage.object_url(self.path), headers=self._headers(), content=content
            )
            self._response = self.storage.http.send(request, follow_redirects=False)
        except BaseException as exc:  # noqa: BLE001 - handed to the writer's thread
            self._error = exc

    def _start_stream(self) -> None:
        self._thread = threading.Thread(
            target=self._send, args=(self._body(),), name=f"supabase-upload-{self.token[:8]}", daemon=True
        )
        self._thread.start()

    def _put(self, item: Any) -> None:
        """Queue an item for the sender, unless it has stopped (then raise what stopped it)."""
        assert self._thread is not None
        while True:
            if not self._thread.is_alive():
                raise self._failure()
            try:
                self._queue.put(item, timeout=0.25)
                return
            except queue.Full:
                continue

    def _failure(self) -> StorageError:
        """The StorageError for a request that ended without success."""
        action = f"uploading {self.key}"
        if self._error is not None and not isinstance(self._error, _UploadAborted):
            if isinstance(self._error, httpx.HTTPError):
                return self.storage.transport_error(self._error, action)
            return StorageError(f"Supabase Storage failed while {action} ({self._error}).")
        if self._response is not None:
            return self.storage.response_error(self._response, action, key=self.key)
        return StorageError(f"The upload of {self.key} was aborted.")

    # -- the interface -------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.done:
            raise StorageError(f"The upload of {self.key} is already finished.")
        view = memoryview(data).cast("B")
        if self.size + len(view) > self.limit:
            self.abort()
            raise StorageError(self.limit_message)
        self.size += len(view)
        if self._thread is None and len(self._head) + len(view) <= STREAM_CHUNK:
            self._head += view
            return
        try:
            if self._thread is None:
                self._start_stream()
                if self._head:
                    self._put(bytes(self._head))
                    self._head = bytearray()
            for offset in range(0, len(view), STREAM_CHUNK):
                self._put(bytes(view[offset : offset + STREAM_CHUNK]))
        except BaseException:
            self.abort()
            raise

    def commit(self) -> None:
        if self.done:
            raise StorageError(f"The upload of {self.key} is already finished.")
        try:
            if self._thread is None:
                # Small object: one POST with a Content-Length, no thread.
                self._body_complete = True
                self._send(bytes(self._head))
                self._head = bytearray()
            else:
                self._put(_END)
                self._thread.join()
        except BaseException:
            self.abort()
            raise
        if self._error is None and self._response is not None and self._response.status_code == 200:
            self.done = True
            return
        error = self._failure()
        self.done = True
        if self._may_have_landed():
            self._remove_if_ours()
        raise error

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        self._head = bytearray()
        if self._thread is None:
            return
        while True:  # make room, then tell the body generator to raise
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        try:
            self._queue.put_nowait(_ABORT)
        except queue.Full:
            pass
        self._thread.join(ABORT_WAIT_SECONDS)
        # A thread still running is stuck in a socket write; its generator raises when it resumes, so the
        # body never completes and the server commits nothing.
        if self._may_have_landed():
            self._remove_if_ours()

    # -- cleaning up after an ambiguous failure ----------------------------------------------------

    def _may_have_landed(self) -> bool:
        """Whether the server may hold the object although we saw no success: the whole body went out and
        the answer was lost or was a server error (a 4xx means it stored nothing)."""
        if not self._body_complete:
            return False
        if self._response is None:
            return True
        if self._response.status_code == 200:
            return False  # committed, and commit() reported it
        status = _error_fields(self._response)[0]
        return status >= 500 or self._response.status_code >= 500

    def _remove_if_ours(self) -> None:
        """Delete the object if it is this upload's (its user metadata carries our token)."""
        try:
            info = self.storage.object_info(self.path, self.key)
            if info is None:
                return
            metadata = info.get("metadata")
            if isinstance(metadata, dict) and metadata.get(UPLOAD_TOKEN_FIELD) not in (None, self.token):
                return  # another writer's object
            if isinstance(metadata, dict) and metadata and UPLOAD_TOKEN_FIELD not in metadata:
                return  # not written by this code: leave it
            self.storage.delete(self.key)
        except StorageError:
            pass  # never mask the error that made us clean up


class SupabaseStorage(Storage):
    """Backups in a Supabase Storage bucket: `<bucket>/<schema>/<file>`."""

    name = "supabase"

    def __init__(
        self,
        *,
        url: str,
        key: str,
        bucket: str = "backups",
        s3_endpoint: str = "",
        s3_region: str = "us-east-1",
        s3_access_key_id: str = "",
        s3_secret_access_key: str = "",
        upload_limit: int = DEFAULT_UPLOAD_LIMIT,
        part_size: int = 16 * MiB,
        url_max_expiry: int = DEFAULT_URL_MAX_EXPIRY,
        connect_timeout: float = 10,
        read_timeout: float = 60,
        max_attempts: int = 5,
        s3_request_checksum_calculation: str = "when_required",
        list_page_size: int = LIST_PAGE_SIZE,
    ) -> None:
        self.project_url = (url or "").strip().rstrip("/")
        self.key = (key or "").strip()
        self.bucket = (bucket or "").strip()
        self.s3_endpoint = (s3_endpoint or "").strip()
        self.s3_region = (s3_region or "").strip() or "us-east-1"
        self.s3_access_key_id = (s3_access_key_id or "").strip()
        self.s3_secret_access_key = (s3_secret_access_key or "").strip()
        try:
            self.upload_limit = int(upload_limit)
        except (TypeError, ValueError):
            raise StorageError(f"SUPABASE_UPLOAD_LIMIT={upload_limit!r} is not a number of bytes.") from None
        if self.upload_limit < 1:
            raise StorageError("SUPABASE_UPLOAD_LIMIT must be at least 1 byte.")
        self.url_max_expiry = int(url_max_expiry)
        if self.url_max_expiry < 1:
            raise StorageError("BACKUPS_URL_MAX_EXPIRY must be at least 1 second.")
        self.part_size = int(part_size)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_attempts = max_attempts
        self.s3_request_checksum_calculation = s3_request_checksum_calculation
        self.list_page_size = max(1, min(int(list_page_size), 1500))
        self._lock = threading.RLock()
        self._bucket_lock = threading.Lock()
        self._http: httpx.Client | None = None
        self._api: Any = None
        self._s3: _SupabaseS3Storage | None = None
        self._bucket_ready = False
        self.bucket_file_size_limit: int | None = None  # the bucket's own limit, read by ensure_bucket()

    @classmethod
    def from_settings(cls, settings: Any = None, **overrides: Any) -> SupabaseStorage:
        """Build one from Django settings (SUPABASE_*, BACKUPS_S3_PART_SIZE, BACKUPS_URL_MAX_EXPIRY)."""
        kwargs = kwargs_from_settings(settings, SUPABASE_SETTINGS, SETTINGS_DEFAULTS)
        kwargs.update(overrides)
        return cls(**kwargs)

    # -- configuration -------------------------------------------------------------------------------

    @property
    def s3_enabled(self) -> bool:
        """Whether writes go through Supabase's S3 endpoint (all three SUPABASE_S3_* settings are set)."""
        return bool(self.s3_endpoint and self.s3_access_key_id and self.s3_secret_access_key)

    def _config_error(self) -> StorageError | None:
        if not self.project_url:
            return StorageError("SUPABASE_URL is not set.")
        parsed = urllib.parse.urlsplit(self.project_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            return StorageError(f"SUPABASE_URL={self.project_url!r} is not a URL like https://<project>.supabase.co.")
        if parsed.path.rstrip("/").endswith(("/storage/v1", "/storage/v1/s3")):
            return StorageError(
                "SUPABASE_URL must be the project URL (https://<project>.supabase.co), not the storage endpoint."
            )
        if not self.key:
            return StorageError("SUPABASE_KEY is not set.")
        if not self.bucket:
            return StorageError("SUPABASE_BUCKET is not set.")
        given = [name for name, value in zip(
            S3_SETTINGS, (self.s3_endpoint, self.s3_access_key_id, self.s3_secret_access_key), strict=True
        ) if value]
        if given and len(given) < len(S3_SETTINGS):
            missing = next(name for name in S3_SETTINGS if name not in given)
            return StorageError(
                f"{missing} is not set; Supabase's S3 endpoint needs SUPABASE_S3_ENDPOINT, "
                f"SUPABASE_S3_ACCESS_KEY_ID and SUPABASE_S3_SECRET_ACCESS_KEY together."
            )
        if self.s3_endpoint and urllib.parse.urlsplit(self.s3_endpoint).scheme not in ("http", "https"):
            return StorageError(
                f"SUPABASE_S3_ENDPOINT={self.s3_endpoint!r} is not a URL like "
                "https://<project>.supabase.co/storage/v1/s3."
            )
        return None

    def _require_config(self) -> None:
        error = self._config_error()
        if error is not None:
            raise error

    @property
    def storage_url(self) -> str:
        return f"{self.project_url}/storage/v1"

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"apikey": self.key, "Authorization": f"Bearer {self.key}"}

    @property
    def http(self) -> httpx.Client:
        """One httpx client (connection pool) per storage, shared with the supabase client."""
        if self._http is None:
            with self._lock:
                if self._http is None:
                    self._http = httpx.Client(
                        timeout=httpx.Timeout(self.read_timeout, connect=self.connect_timeout),
                        follow_redirects=True,
                    )
        return self._http

    @property
    def api(self) -> Any:
        """storage3's client (`create_client(url, key).storage`), created on first use."""
        if self._api is None:
            self._require_config()
            from supabase import ClientOptions, create_client

            with self._lock:
                if self._api is None:
                    client = create_client(self.project_url, self.key, ClientOptions(httpx_client=self.http))
                    self._api = client.storage
        return self._api

    def _files(self) -> Any:
        return self.api.from_(self.bucket)

    @property
    def s3(self) -> _SupabaseS3Storage:
        """The S3Storage that writes through Supabase's S3 endpoint (only when s3_enabled)."""
        if self._s3 is None:
            self._require_config()
            with self._lock:
                if self._s3 is None:
                    self._s3 = _SupabaseS3Storage(
                        bucket=self.bucket,
                        access_key_id=self.s3_access_key_id,
                        secret_access_key=self.s3_secret_access_key,
                        region_name=self.s3_region,
                        endpoint_url=self.s3_endpoint,
                        key_prefix="",
                        sse="none",
                        storage_class="STANDARD",
                        addressing_style="path",
                        request_checksum_calculation=self.s3_request_checksum_calculation,
                        part_size=self.part_size,
                        url_max_expiry=self.url_max_expiry,
                        connect_timeout=self.connect_timeout,
                        read_timeout=self.read_timeout,
                        max_attempts=self.max_attempts,
                        setting_names=S3_SETTING_NAMES,
                    )
        return self._s3

    def write_limit(self, key: str) -> tuple[int, str]:
        """The most bytes a standard upload of `key` may carry, and the sentence for one that would carry more.

        SUPABASE_UPLOAD_LIMIT, or the bucket's file size limit when lower: Supabase enforces neither on a chunked
        body, so this is the only guard.
        """
        bucket_limit = self.bucket_file_size_limit
        if bucket_limit is not None and bucket_limit < self.upload_limit:
            return bucket_limit, BUCKET_LIMIT_MESSAGE.format(key=key, bucket=self.bucket, limit=bucket_limit)
        return self.upload_limit, UPLOAD_LIMIT_MESSAGE.format(key=key, limit=self.upload_limit)

    def object_url(self, path: str) -> str:
        bucket = urllib.parse.quote(self.bucket, safe="")
        return f"{self.storage_url}/object/{bucket}/{urllib.parse.quote(path, safe='/')}"

    # -- errors --------------------------------------------------------------------------------------

    def response_error(
        self, response: httpx.Response, action: str, *, key: str | None = None
    ) -> StorageError:
        """The StorageError for an error response of Supabase Storage (or of whatever answered instead).

        Storage answers JSON. Anything else is not Storage's REST API: HTML from a proxy, or the S3 protocol's XML
        (`.../storage/v1/s3` answers a Bearer request 403 AccessDenied "Missing signature"), so SUPABASE_URL, not
        SUPABASE_KEY, is what to check; only a proxy's size refusal or its server errors read otherwise.
        """
        status, code, error, message, is_json = _error_fields(response)
        http_status = response.status_code
        detail = message or error or code or f"HTTP {http_status}"
        if status == 413 or http_status == 413:  # one POST with a Content-Length, so at most a MiB (see the writer)
            return StorageError(SIZE_LIMIT_MESSAGE.format(action=action))
        if status == 429 or status >= 500 or http_status >= 500:
            return StorageTransientError(
                f"Supabase Storage answered {status} ({detail}) while {action}; try again later."
            )
        if not is_json:
            return StorageError(
                f"{self.project_url} did not answer like Supabase Storage while {action} (HTTP {http_status}); "
                f"check SUPABASE_URL."
            )
        if http_status == 401 or status == 401:
            return StorageError(f"Supabase rejected the API key while {action} ({detail}); check SUPABASE_KEY.")
        if "row-level security" in message:  # Postgres's 42501: the key's role is subject to RLS
            return StorageError(ANON_KEY_MESSAGE.format(action=action, message=message))
        if status == 403:
            if message.startswith('"exp" claim'):  # jose's JWTExpired: `"exp" claim timestamp check failed`
                return StorageError(
                    f"Supabase refused SUPABASE_KEY while {action}: it is an expired JWT ({message}); use the "
                    f"project's current service_role key."
                )
            if message.startswith(("Invalid Compact JWS", "JWS ", "JWT ", "Failed to base64url")):  # jose JWSInvalid
                return StorageError(
                    f"Supabase could not read SUPABASE_KEY as a JWT while {action} ({message}); SUPABASE_KEY must "
                    f"be the project's service_role key."
                )
            return StorageError(
                f"Supabase denied {action} ({detail}); SUPABASE_KEY must be the project's service_role key."
            )
        if _is_missing_bucket(status, code, error, message):
            return StorageError(f"Bucket {self.bucket} does not exist (SUPABASE_BUCKET).")
        if _is_missing_object(status, code, error, message):
            return ObjectNotFound(f"No backup object at {key}." if key else f"No object found while {action}.")
        if status == 409:
            what = key or "that key"
            return StorageError(f"An object already exists at {what}; refusing to overwrite it.")
        if code == "InvalidBucketName":
            return StorageError(f"Supabase refused the bucket name {self.bucket!r} ({detail}); check SUPABASE_BUCKET.")
        if status == 404:
            return StorageError(
                f"{self.project_url} did not answer like Supabase Storage while {action} (HTTP {http_status}); "
                f"check SUPABASE_URL."
            )
        return StorageError(f"Supabase Storage refused {action} ({code or error or status}: {message}).")

    def transport_error(self, exc: BaseException, action: str) -> StorageError:
        """The StorageError for an httpx error (no answer at all)."""
        if isinstance(exc, httpx.TimeoutException):
            return StorageTransientError(f"Supabase at {self.project_url} timed out while {action}; try again later.")
        if isinstance(exc, httpx.ConnectError):
            if _is_tls_error(exc):
                return StorageError(f"TLS to {self.project_url} failed while {action} ({exc}); check SUPABASE_URL.")
            return StorageTransientError(
                f"Cannot reach Supabase at {self.project_url} while {action} ({exc}); check SUPABASE_URL."
            )
        if isinstance(exc, (httpx.UnsupportedProtocol, httpx.LocalProtocolError)):
            return StorageError(f"Cannot talk to {self.project_url} while {action} ({exc}); check SUPABASE_URL.")
        if isinstance(exc, httpx.TransportError):
            return StorageTransientError(
                f"The connection to Supabase at {self.project_url} failed while {action} ({exc})."
            )
        return StorageError(f"Supabase Storage failed while {action} ({exc}).")

    def _unexpected(self, action: str, exc: BaseException | None = None) -> StorageError:
        why = f" ({exc})" if exc is not None else ""
        return StorageError(f"{self.project_url} answered {action} with something unexpected{why}; check SUPABASE_URL.")

    def _call(self, action: str, fn: Any, *args: Any, key: str | None = None) -> Any:
        """Run a storage3 call, turning its errors into StorageErrors."""
        try:
            return fn(*args)
        except StorageApiError as exc:
            response = _status_response(exc)
            if response is not None:
                raise self.response_error(response, action, key=key) from exc
            status = int(exc.status) if str(exc.status).isdigit() else 0
            raise self.response_error(
                httpx.Response(400, json={"statusCode": status, "error": exc.code, "message": exc.message}),
                action, key=key,
            ) from exc
        except httpx.HTTPError as exc:
            raise self.transport_error(exc, action) from exc
        except (ValueError, KeyError, TypeError) as exc:  # a 200 whose body is not what Supabase sends
            raise self._unexpected(action, exc) from exc

    def _request(self, method: str, path: str, action: str, **kwargs: Any) -> httpx.Response:
        """A plain REST request to `/storage/v1/<path>`; error statuses are returned, transport errors raised."""
        self._require_config()
        try:
            return self.http.request(method, f"{self.storage_url}/{path}", headers=self.auth_headers, **kwargs)
        except httpx.HTTPError as exc:
            raise self.transport_error(exc, action) from exc

    # -- the bucket ----------------------------------------------------------------------------------

    def ensure_bucket(self, *, force: bool = False) -> None:
        """Create the bucket (private) if it does not exist; refuse a public one. Once per instance."""
        if self._bucket_ready and not force:
            return
        action = f"checking bucket {self.bucket}"
        response = self._request("GET", f"bucket/{urllib.parse.quote(self.bucket, safe='')}", action)
        if response.status_code == 200:
            try:
                info = response.json()
                public = bool(info.get("public"))
                limit = info.get("file_size_limit")
            except (ValueError, AttributeError):
                raise self.response_error(response, action) from None
            # Supabase applies it to chunked uploads no more than the project's limit: the writer does.
            valid = isinstance(limit, int) and not isinstance(limit, bool) and limit > 0
            self.bucket_file_size_limit = limit if valid else None
            if public:
                raise StorageError(
                    f"Bucket {self.bucket} is public, so anyone could download its backups; make it private "
                    f"or choose another SUPABASE_BUCKET."
                )
        else:
            status, code, error, message, is_json = _error_fields(response)
            if not (is_json and _is_missing_bucket(status, code, error, message)):
                raise self.response_error(response, action)
            self._create_bucket()
        self._bucket_ready = True

    def _create_bucket(self) -> None:
        try:
            self.api.create_bucket(self.bucket, None, {"public": False})
        except StorageApiError as exc:
            response = _status_response(exc)
            if response is not None and _error_fields(response)[0] == 409:
                return  # created meanwhile by another worker
            if "row-level security" in str(exc.message):  # it could not see the bucket either: an RLS-bound key
                raise StorageError(
                    f"Bucket {self.bucket} is not visible to SUPABASE_KEY, and creating it was refused "
                    f"({exc.message}): SUPABASE_KEY is most likely the project's anon (publishable) key, which "
                    f"row-level security confines; set it to the service_role (secret) key."
                ) from exc
            if response is not None:
                raise self.response_error(response, f"creating bucket {self.bucket}") from exc
            raise StorageError(f"Supabase Storage refused creating bucket {self.bucket} ({exc.message}).") from exc
        except httpx.HTTPError as exc:
            raise self.transport_error(exc, f"creating bucket {self.bucket}") from exc

    def _check_s3(self) -> None:
        """List one key through the S3 endpoint: a GET, so a refusal carries its code (a HEAD's has none)."""
        s3 = self.s3
        try:
            s3.client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
        except (BotoCoreError, ClientError) as exc:
            if isinstance(exc, ClientError):
                code, status = _error_code(exc)
                message = _error_message(exc)
                if status == 404 or code in {"NoSuchBucket", "404", "NotFound"}:
                    raise StorageError(
                        f"Supabase's S3 endpoint {self.s3_endpoint} does not know bucket {self.bucket} that the "
                        f"REST API has; check SUPABASE_S3_ENDPOINT (https://<project>.supabase.co/storage/v1/s3)."
                    ) from None
                if status == 401:  # S3 signs requests; a 401 is the API gateway asking for an apikey
                    raise StorageError(
                        f"{self.s3_endpoint} answered like the REST API, not the S3 protocol; check "
                        f"SUPABASE_S3_ENDPOINT (https://<project>.supabase.co/storage/v1/s3)."
                    ) from None
                if code == "SignatureDoesNotMatch":  # a wrong secret, or a region Supabase does not sign with
                    raise StorageError(
                        f"Supabase's S3 endpoint refused the request signature (SignatureDoesNotMatch); check "
                        f"SUPABASE_S3_SECRET_ACCESS_KEY, and {REGION_HINT.format(region=self.s3_region)}."
                    ) from None
                if code == "InvalidAccessKeyId" or message == "Invalid Access Key":
                    raise StorageError(
                        f"Supabase's S3 endpoint does not know the access key ({code}: {message or code}); check "
                        f"SUPABASE_S3_ACCESS_KEY_ID."
                    ) from None
                if status == 403:
                    raise StorageError(
                        f"Supabase's S3 endpoint refused the S3 access key ({code}: {message or code}); check "
                        f"SUPABASE_S3_ACCESS_KEY_ID, SUPABASE_S3_SECRET_ACCESS_KEY and SUPABASE_S3_REGION."
                    ) from None
            raise s3.map_error(exc, f"checking bucket {self.bucket} through the S3 endpoint") from None

    # -- the interface -------------------------------------------------------------------------------

    def check(self) -> None:
        self._require_config()
        self.ensure_bucket(force=True)
        if self.s3_enabled:
            self._check_s3()

    def open_write(self, key: str, *, retain_until: datetime | None = None) -> ObjectWriter:
        path = check_key(key)
        self._require_config()
        if not self._bucket_ready:
            with self._bucket_lock:  # one bucket check per instance, even with concurrent writers
                self.ensure_bucket()
        if self.s3_enabled:
            return self.s3.open_write(key)
        return SupabaseUploadWriter(self, key, path)

    def open_read(self, key: str, offset: int = 0) -> BinaryIO:
        path = _check_read_key(key)
        self._require_config()
        action = f"reading {key}"
        ranged = {"Range": f"bytes={offset}-"} if offset else {}
        request = self.http.build_request("GET", self.object_url(path), headers={**self.auth_headers, **ranged})
        try:
            response = self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self.transport_error(exc, action) from exc
        if response.status_code != (206 if offset else 200):
            try:
                response.read()
            except httpx.HTTPError:
                pass
            finally:
                response.close()
            raise self.response_error(response, action, key=key)
        return SupabaseReader(response, key, self)  # type: ignore[return-value]

    def delete(self, key: str) -> None:
        try:
            path = _check_read_key(key)
            self._call(f"deleting {key}", self._files().remove, [path], key=key)
        except ObjectNotFound:
            pass

    def list(self, prefix: str) -> Iterator[StoredObject]:
        if not isinstance(prefix, str) or prefix.startswith("/") or "\x00" in prefix or "%" in prefix:
            raise StorageError(f"Prefix {prefix!r} is not a valid backup prefix.")
        folder, _, search = prefix.rpartition("/")
        if folder and not self._folder_exists(folder, prefix):
            return
        yield from self._walk(folder, search, prefix)

    def _folder_exists(self, folder: str, prefix: str) -> bool:
        """Whether `folder` exists with exactly this case.

        Supabase matches prefixes case-insensitively and names entries relative to the prefix given, so listing
        `CLINIC1/` would return clinic1's objects as `CLINIC1/...`; folder entries, though, carry their real name.
        """
        parent, _, name = folder.rpartition("/")
        if parent and not self._folder_exists(parent, prefix):
            return False
        files = self._files()
        offset = 0
        while True:
            options = {"limit": self.list_page_size, "offset": offset, "search": name,
                       "sortBy": {"column": "name", "order": "asc"}}
            entries = self._call(f"listing {prefix}", files.list, parent, options)
            if not isinstance(entries, list):
                raise self._unexpected(f"listing {prefix}")
            if any(entry.get("id") is None and entry.get("name") == name for entry in entries):
                return True
            if len(entries) < self.list_page_size:
                return False
            offset += len(entries)

    def _walk(self, folder: str, search: str, prefix: str) -> Iterator[StoredObject]:
        """Every object under `folder` whose key starts with `prefix`: all pages, subfolders as needed.

        Supabase lists one folder level at a time, folders as entries with `id: null`, matching `search`
        case-insensitively; keys are compared exactly here.
        """
        files = self._files()
        offset = 0
        while True:
            options: dict[str, Any] = {
                "limit": self.list_page_size, "offset": offset, "sortBy": {"column": "name", "order": "asc"},
            }
            if search:
                options["search"] = search
            entries = self._call(f"listing {prefix or '/'}", files.list, folder, options)
            if not isinstance(entries, list):
                raise self._unexpected(f"listing {prefix or '/'}")
            subfolders = []
            for entry in entries:
                name = str(entry.get("name") or "")
                if not name:
                    continue
                full = f"{folder}/{name}" if folder else name
                if entry.get("id") is None:
                    if (full + "/").startswith(prefix):
                        subfolders.append(full)
                    continue
                if name == FOLDER_PLACEHOLDER or not full.startswith(prefix):
                    continue
                yield self._stored(full, entry)
            for sub in subfolders:
                yield from self._walk(sub, "", prefix)
            if len(entries) < self.list_page_size:
                return
            offset += len(entries)

    @staticmethod
    def _stored(key: str, entry: Mapping[str, Any]) -> StoredObject:
        metadata = entry.get("metadata") or {}
        size = metadata.get("size", metadata.get("contentLength", 0)) if isinstance(metadata, dict) else 0
        modified = (metadata.get("lastModified") if isinstance(metadata, dict) else None) or entry.get("updated_at")
        return StoredObject(key=key, size=int(size or 0), last_modified=_parse_time(modified))

    def object_info(self, path: str, key: str) -> dict[str, Any] | None:
        """Supabase's info on the object (size, last_modified, user metadata), or None if there is none."""
        try:
            info = self._call(f"checking {key}", self._files().info, path, key=key)
        except ObjectNotFound:
            return None
        if not isinstance(info, dict):
            raise self._unexpected(f"checking {key}")
        return info

    def stat(self, key: str) -> StoredObject | None:
        try:
            path = _check_read_key(key)
        except ObjectNotFound:
            return None
        info = self.object_info(path, key)
        if info is None:
            return None
        size = info.get("size")
        if size is None:  # an older Storage API: find the object in its folder's listing instead
            return next((obj for obj in self.list(key) if obj.key == key), None)
        return StoredObject(key=key, size=int(size), last_modified=_parse_time(info.get("last_modified")))

    def url(self, key: str, expires_in: int, *, bound: dict | None = None) -> str:
        """A signed download link, valid 1..BACKUPS_URL_MAX_EXPIRY seconds."""
        valid = isinstance(expires_in, int) and not isinstance(expires_in, bool)
        if not valid or not 1 <= expires_in <= self.url_max_expiry:
            raise ValueError(
                f"expires_in must be a whole number of seconds from 1 to {self.url_max_expiry} "
                f"(BACKUPS_URL_MAX_EXPIRY); got {expires_in!r}."
            )
        path = _check_read_key(key)
        signed = self._call(f"signing a link to {key}", self._files().create_signed_url, path, expires_in, key=key)
        link = str(signed.get("signedURL") or signed.get("signedUrl") or "")
        if not link:
            raise self._unexpected(f"signing a link to {key}")
        if link.startswith("/"):
            link = f"{self.storage_url}{link}"
        return link
