"""A local stand-in for Supabase Storage's HTTP API, for tests.

Stdlib only. It speaks:

* the REST API the ``supabase`` / ``storage3`` client uses, under ``/storage/v1``
  (buckets, upload/update/download/info/list/remove/move/copy, signed URLs);
* the S3 protocol Supabase exposes at ``/storage/v1/s3`` (path-style only),
  the subset boto3 needs for streamed uploads and reads.

Both share one object store: object bodies are files on disk (written to a temp
file, then renamed into place, so a failed upload leaves nothing visible), and
metadata lives in a sqlite3 database guarded by a lock. Bodies are streamed in
1 MiB chunks in both directions; nothing holds a whole object in memory.

Error bodies and status codes follow supabase/storage:

* REST errors are rendered like ``src/http/error-handler.ts``: HTTP 400 (500 for
  internal errors) with ``{"statusCode": "<logical status>", "code", "error",
  "message"}``, e.g. a missing object is HTTP 400 with
  ``{"statusCode": "404", "code": "NoSuchKey", "error": "not_found",
  "message": "Object not found"}``.
* Requests without / with a wrong ``apikey`` get the API gateway's 401
  ``{"message": "No API key found in request" | "Invalid API key", "hint"}``.
* S3 errors are XML ``<Error xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Code/>
  <Message/><Resource/></Error>`` with the logical status as the HTTP status
  (``src/http/routes/s3/error-handler.ts``). The namespace matters: botocore then
  leaves ``Error.Code`` empty and puts ``Code`` / ``Message`` at the top of the response.

Connections: a refused standard upload (409 the object exists, 413 over a
``Content-Length``, 400 ``InvalidKey``, a missing bucket) is answered at once,
without reading its body, and the connection stays open, but nothing more sent on
it is ever answered (storage-api leaves the request stream paused): a client that
reuses it waits for its read timeout. Other errors drain the body and keep serving.

Auth: REST calls need ``apikey: <service key>`` and ``Authorization: Bearer <t>``
where ``t`` is the service key itself or any HS256 JWT signed with the JWT secret:
every such token may do everything, but a JWT whose ``role`` is ``anon`` (the anon
key) is bound by row-level security with no policies: it sees no bucket (404 Bucket
not found) and creating one is HTTP 400 ``{"statusCode": "403", "error":
"Unauthorized", "message": "new row violates row-level security policy"}``. A refused token is HTTP 400 with
``statusCode "403"``, ``AccessDenied`` and jose's message, as storage's
``verifyJWT`` passes it through: ``Invalid Compact JWS`` (malformed or missing),
``"exp" claim timestamp check failed`` (expired), ``signature verification
failed``. Signed-URL and public-bucket reads need neither; a refused link token is
``InvalidJWT`` with the same messages. S3 calls need SigV4 with the configured
access key id (else 403 ``AccessDenied`` "Invalid Access Key"); a request without
a SigV4 signature (a Bearer token) is 403 ``AccessDenied`` "Missing signature".
The signature is verified with the secret key over a scope whose region is the
client's only if it is ``auto``, ``us-east-1``, empty or the server's
``s3_region`` (storage's ``getSelectedRegion``): any other region gets 403
``SignatureDoesNotMatch``. Hex ``x-amz-content-sha256`` / ``x-amz-checksum-*`` /
``Content-MD5`` values are checked against the body.

Keys: only storage's S3-safe set ``A-Z a-z 0-9 _ / ! . * ' ( ) space & $ = @ ; : + , ? -``
(``src/storage/limits.ts``); anything else (non-ASCII, emoji, ``% # [ ] ~ { } " ^ |``)
is 400 ``InvalidKey`` on uploads, reads, infos and signing alike. ``?`` is accepted,
as by storage, though it cuts a signed link's path short.

Limits: ``file_size_limit`` (default 52428800 = 50 MiB, storage's default
``FILE_SIZE_LIMIT``), lowered by a bucket's own ``file_size_limit``. Like storage's
``uploader.ts``, a REST upload with a raw body is checked only through its
``Content-Length``: a chunked body is stored whatever its size. A multipart/form-data
file is truncated at the limit and refused. Over it, REST answers HTTP 400
``{"statusCode": "413", "error": "Payload too large", ...}``. S3 objects (the sum of
a multipart upload's parts, each part with its Content-Length) are always checked:
413 ``EntityTooLarge``. Multipart parts but the last must be >= 5 MiB.

boto3 needs ``endpoint_url=<base_url>/storage/v1/s3`` and
``Config(signature_version="s3v4", s3={"addressing_style": "path"})`` and a region
the server accepts (above). Both ``request_checksum_calculation`` settings work: over
http botocore sends ``x-amz-checksum-crc32`` headers, over https ``aws-chunked``
bodies with CRC32 trailers; both are decoded and verified.

Run standalone::

    python -m tests.servers.supabase_storage --host 127.0.0.1 --port 0 \\
        --data-dir DIR --service-key KEY --jwt-secret SECRET \\
        [--s3-access-key AK --s3-secret-key SK] [--file-size-limit 1GB]

It prints ``READY http://127.0.0.1:<port>`` once listening. In-process, use
:func:`start_server` / :func:`stop`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import datetime as dt
import email.utils
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import sqlite3
import ssl
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape as _xml_escape

__all__ = ["StorageServer", "main", "parse_size", "start_server", "stop"]

CHUNK = 1024 * 1024
DEFAULT_FILE_SIZE_LIMIT = 52428800  # 50 MiB, Supabase's default FILE_SIZE_LIMIT
MIN_PART_SIZE = 5 * 1024 * 1024  # S3 minimum size for every part but the last
MAX_JSON_BODY = 16 * 1024 * 1024
S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
REST_PREFIX = "/storage/v1"
S3_PREFIX = "/storage/v1/s3"


# --------------------------------------------------------------------------- errors


class StorageError(Exception):
    """A REST error, rendered like supabase/storage's error handler."""

    def __init__(self, status: int, code: str, message: str, error: str | None = None):
        super().__init__(message)
        self.status = status  # the logical status (``statusCode`` in the body)
        self.code = code
        self.message = message
        self.error = error or code

    @property
    def http_status(self) -> int:
        # StorageBackendError.userStatusCode: 500 stays 500, everything else is 400.
        return 500 if self.status == 500 else 400

    def body(self) -> dict:
        return {
            "statusCode": str(self.status),
            "code": self.code,
            "error": self.error,
            "message": self.message,
        }


class GatewayError(Exception):
    """An error produced in front of storage (API gateway / router)."""

    def __init__(self, http_status: int, body: dict):
        super().__init__(body.get("message", ""))
        self.http_status = http_status
        self.body = body


class S3Error(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class BodyError(Exception):
    """The request body could not be read (client went away, bad framing)."""


def no_such_bucket() -> StorageError:
    return StorageError(404, "NoSuchBucket", "Bucket not found", "Bucket not found")


def no_such_key() -> StorageError:
    return StorageError(404, "NoSuchKey", "Object not found", "not_found")


def key_already_exists() -> StorageError:
    return StorageError(
        409, "ResourceAlreadyExists", "The resource already exists", "Duplicate"
    )


def bucket_already_exists() -> StorageError:
    return StorageError(
        409, "BucketAlreadyExists", "The resource already exists", "Duplicate"
    )


def entity_too_large() -> StorageError:
    return StorageError(
        413,
        "EntityTooLarge",
        "The object exceeded the maximum allowed size",
        "Payload too large",
    )


def rls_violation() -> StorageError:
    """Postgres's 42501 as storage-api renders it (``DBError``): an RLS-bound role inserting a row."""
    return StorageError(403, "AccessDenied", "new row violates row-level security policy", "Unauthorized")


def access_denied(message: str) -> StorageError:
    return StorageError(403, "AccessDenied", message or "Access denied", "Unauthorized")


def invalid_request(message: str) -> StorageError:
    return StorageError(400, "InvalidRequest", message)


def no_such_upload() -> StorageError:
    return StorageError(404, "NoSuchUpload", "Upload not found")


def to_s3_error(err: StorageError) -> S3Error:
    return S3Error(err.status, err.code, err.message)


# --------------------------------------------------------------------------- helpers


_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
    "TIB": 1024**4,
}


def parse_size(value) -> int | None:
    """Parse a size: an int (bytes), ``"52428800"``, ``"100MB"``, ``"1.5GB"``, ``"50MiB"``.

    KB/MB/GB are decimal, like storage's ``parseFileSizeToBytes`` (used for a bucket's
    ``file_size_limit: "100MB"``); KiB/MiB/GiB are binary.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise TypeError("invalid size")
    if isinstance(value, (int, float)):
        return int(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).upper() not in _SIZE_UNITS:
        raise ValueError(f"invalid size: {value!r}")
    return round(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(ts: dt.datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def parse_iso(value: str) -> dt.datetime:
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


def http_date(value: str) -> str:
    return email.utils.format_datetime(parse_iso(value), usegmt=True)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class JWTError(Exception):
    pass


def jwt_encode(payload: dict, secret: str) -> str:
    header = b64url(
        json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode()
    )
    body = b64url(json.dumps(payload, separators=(",", ":")).encode())
    signing_input = f"{header}.{body}".encode("ascii")
    sig = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{body}.{b64url(sig)}"


def jwt_decode(token: str | None, secret: str) -> dict:
    """Verify an HS256 JWT like storage's ``verifyJWT`` (``jose.jwtVerify``), with jose's error messages.

    ``src/internal/auth/jwt.ts`` passes jose's message through: a malformed token (not three
    dot-separated parts, or no token at all) is ``Invalid Compact JWS``, an expired one
    ``"exp" claim timestamp check failed``.
    """
    parts = (token or "").split(".")
    if len(parts) != 3:
        raise JWTError("Invalid Compact JWS")
    try:
        header = json.loads(b64url_decode(parts[0]))
    except (ValueError, binascii.Error) as exc:
        raise JWTError("JWS Protected Header is invalid") from exc
    if not isinstance(header, dict):
        raise JWTError("JWS Protected Header must be an object")
    if header.get("alg") != "HS256":
        raise JWTError('"alg" (Algorithm) Header Parameter value not allowed')
    try:
        signature = b64url_decode(parts[2])
    except (ValueError, binascii.Error) as exc:
        raise JWTError("Failed to base64url decode the signature") from exc
    expected = hmac.new(
        secret.encode(), f"{parts[0]}.{parts[1]}".encode("ascii"), hashlib.sha256
    ).digest()
    if not hmac.compare_digest(signature, expected):
        raise JWTError("signature verification failed")
    try:
        payload = json.loads(b64url_decode(parts[1]))
    except (ValueError, binascii.Error) as exc:
        raise JWTError("JWT Claims Set must be a top-level JSON object") from exc
    if not isinstance(payload, dict):
        raise JWTError("JWT Claims Set must be a top-level JSON object")
    exp = payload.get("exp")
    if exp is not None:
        if not isinstance(exp, (int, float)) or isinstance(exp, bool):
            raise JWTError('"exp" claim must be a number')
        if exp <= int(time.time()):
            raise JWTError('"exp" claim timestamp check failed')
    return payload


# src/storage/limits.ts: "only allow s3 safe characters and characters which require special
# handling"; anything else (non-ASCII, emoji, ``% # [ ] ~ { } " ^ | < > \\`` and backtick) is a
# 400 InvalidKey. Hyphen last so it stays a literal.
VALID_OBJECT_KEY = re.compile(r"[A-Za-z0-9_/!.*'() &$=@;:+,?-]*")
VALID_BUCKET_NAME = re.compile(r"[A-Za-z0-9_!.*'() &$=@;:+,?-]*")


def valid_bucket_name(name: str) -> bool:
    """``isValidBucketName``: 1..100 characters of the S3-safe set, no slash."""
    return 0 < len(name) < 101 and VALID_BUCKET_NAME.fullmatch(name) is not None


def check_key(key: str) -> None:
    """``mustBeValidKey``: the S3-safe set only, else 400 InvalidKey (and no ``.``/``..`` segments)."""
    if (
        not key
        or VALID_OBJECT_KEY.fullmatch(key) is None
        or len(key.encode()) > 1024
        or any(seg in (".", "..") for seg in key.split("/"))
    ):
        raise StorageError(400, "InvalidKey", f"Invalid key: {key}")


def xml_text(value) -> str:
    return _xml_escape(str(value), {'"': "&quot;"})


def xml_doc(root: str, children: list[str]) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{S3_NS}">'
        + "".join(children)
        + f"</{root}>"
    ).encode()


def xml_el(tag: str, value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"<{tag}>{xml_text(value)}</{tag}>"


def strip_ns(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


class Crc32:
    def __init__(self):
        self.value = 0

    def update(self, data: bytes) -> None:
        self.value = zlib.crc32(data, self.value)

    def b64digest(self) -> str:
        return base64.b64encode(self.value.to_bytes(4, "big")).decode()


def make_checksum(name: str):
    """x-amz-checksum-<name> verifier, or None if the algorithm isn't verifiable with stdlib."""
    if name == "crc32":
        return Crc32()
    if name in ("sha1", "sha256"):
        h = hashlib.new(name)
        h.b64digest = lambda h=h: base64.b64encode(h.digest()).decode()  # type: ignore[attr-defined]
        return h
    return None  # crc32c / crc64nvme: accepted but not verified


# --------------------------------------------------------------------------- body readers


class BodyReader:
    """Reads a request body framed by Content-Length or Transfer-Encoding: chunked."""

    def __init__(self, rfile, headers):
        self.rfile = rfile
        self.chunked = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
        length = headers.get("Content-Length")
        if self.chunked:
            self.remaining = None
        else:
            try:
                self.remaining = int(length) if length is not None else 0
            except ValueError as exc:
                raise BodyError("invalid Content-Length") from exc
        self.declared_length = None if self.chunked else self.remaining
        self._chunk_left = 0
        self.done = not self.chunked and self.remaining == 0
        self.bytes_read = 0

    def _readline(self) -> bytes:
        line = self.rfile.readline(65537)
        if not line.endswith(b"\n"):
            raise BodyError("truncated chunked body")
        return line

    def read(self, n: int = CHUNK) -> bytes:
        if self.done:
            return b""
        if not self.chunked:
            data = self.rfile.read(min(n, self.remaining))
            if not data:
                raise BodyError(
                    "client closed the connection before sending the whole body"
                )
            self.remaining -= len(data)
            self.bytes_read += len(data)
            if self.remaining == 0:
                self.done = True
            return data
        if self._chunk_left == 0:
            line = self._readline().split(b";", 1)[0].strip()
            try:
                size = int(line, 16)
            except ValueError as exc:
                raise BodyError("bad chunk size") from exc
            if size == 0:
                while self._readline() not in (b"\r\n", b"\n"):
                    pass  # trailers of the HTTP chunked framing
                self.done = True
                return b""
            self._chunk_left = size
        data = self.rfile.read(min(n, self._chunk_left))
        if not data:
            raise BodyError("truncated chunked body")
        self._chunk_left -= len(data)
        self.bytes_read += len(data)
        if self._chunk_left == 0:
            self._readline()  # CRLF after the chunk data
        return data

    def drain(self) -> None:
        while not self.done:
            self.read(CHUNK)


class PrefixedReader:
    """A reader with a push-back buffer and a line reader, over any ``read(n)`` source."""

    def __init__(self, source):
        self.source = source
        self.buf = b""

    def read(self, n: int = CHUNK) -> bytes:
        if self.buf:
            data, self.buf = self.buf[:n], self.buf[n:]
            return data
        return self.source.read(n)

    def read_exact(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            data = self.read(n - len(out))
            if not data:
                raise BodyError("truncated body")
            out += data
        return bytes(out)

    def readline(self, limit: int = 65536) -> bytes:
        while b"\n" not in self.buf:
            if len(self.buf) > limit:
                raise BodyError("line too long")
            data = self.source.read(CHUNK)
            if not data:
                raise BodyError("truncated body")
            self.buf += data
        idx = self.buf.index(b"\n") + 1
        line, self.buf = self.buf[:idx], self.buf[idx:]
        return line


class AwsChunkedReader:
    """Decodes ``Content-Encoding: aws-chunked`` (signed or unsigned, with optional trailers).

    Chunk signatures (``;chunk-signature=``) are parsed but not verified.
    """

    def __init__(self, source):
        self.src = PrefixedReader(source)
        self.left = 0
        self.done = False
        self.trailers: dict[str, str] = {}

    def read(self, n: int = CHUNK) -> bytes:
        if self.done:
            return b""
        if self.left == 0:
            line = self.src.readline().strip()
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError as exc:
                raise BodyError("bad aws-chunked chunk header") from exc
            if size == 0:
                while True:
                    trailer = self.src.readline().strip()
                    if not trailer:
                        break
                    name, _, value = trailer.decode("latin-1").partition(":")
                    self.trailers[name.strip().lower()] = value.strip()
                self.done = True
                return b""
            self.left = size
        data = self.src.read(min(n, self.left))
        if not data:
            raise BodyError("truncated aws-chunked body")
        self.left -= len(data)
        if self.left == 0 and self.src.read_exact(2) != b"\r\n":
            raise BodyError("bad aws-chunked chunk terminator")
        return data

    def drain(self) -> None:
        while not self.done:
            self.read(CHUNK)


class LimitExceeded(Exception):
    pass


def stream_to_file(
    reader, path: str, limit: int | None, hashers: list, *, stop_at_limit=False
):
    """Copy ``reader`` into ``path`` chunk by chunk. Returns (size, md5_hex, truncated)."""
    md5 = hashlib.md5()
    size = 0
    truncated = False
    with open(path, "wb") as out:
        while True:
            data = reader.read(CHUNK)
            if not data:
                break
            size += len(data)
            if limit is not None and size > limit:
                truncated = True
                if stop_at_limit:
                    raise LimitExceeded()
                continue  # keep consuming, like busboy's truncation
            out.write(data)
            md5.update(data)
            for h in hashers:
                h.update(data)
    return size, md5.hexdigest(), truncated


# --------------------------------------------------------------------------- multipart/form-data


def _parse_header_params(value: str) -> tuple[str, dict]:
    parts = value.split(";")
    params = {}
    for item in parts[1:]:
        k, _, v = item.strip().partition("=")
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] == '"':
            v = v[1:-1].replace('\\"', '"')
        params[k.strip().lower()] = v
    return parts[0].strip().lower(), params


class MultipartFormReader:
    """Streaming multipart/form-data parser: fields are kept (small), the file is streamed."""

    def __init__(self, source, boundary: str):
        self.src = PrefixedReader(source)
        self.delim = b"--" + boundary.encode("latin-1")
        self.marker = b"\r\n" + self.delim

    def _skip_preamble(self) -> bool:
        buf = b""
        while True:
            idx = buf.find(self.delim)
            if idx >= 0:
                self.src.buf = buf[idx + len(self.delim) :] + self.src.buf
                return True
            buf = buf[-len(self.delim) :]
            data = self.src.read(CHUNK)
            if not data:
                return False
            buf += data

    def parts(self):
        """Yield (headers, reader) for each part; the reader must be consumed before the next."""
        if not self._skip_preamble():
            return
        while True:
            tail = self.src.read_exact(2)
            if tail == b"--":
                return
            if tail != b"\r\n":
                raise BodyError("malformed multipart body")
            headers = {}
            while True:
                line = self.src.readline(16384).rstrip(b"\r\n")
                if not line:
                    break
                name, _, value = line.decode("utf-8", "replace").partition(":")
                headers[name.strip().lower()] = value.strip()
            part = _PartReader(self)
            yield headers, part
            while not part.done:
                part.read(CHUNK)


class _PartReader:
    def __init__(self, form: MultipartFormReader):
        self.form = form
        self.done = False
        self.buf = b""

    def read(self, n: int = CHUNK) -> bytes:
        if self.done:
            return b""
        marker = self.form.marker
        src = self.form.src
        while True:
            idx = self.buf.find(marker)
            if idx >= 0:
                data = self.buf[:idx]
                src.buf = self.buf[idx + len(marker) :] + src.buf
                self.buf = b""
                self.done = True
                return data
            keep = len(marker) - 1
            if len(self.buf) > keep and len(self.buf) - keep >= min(n, CHUNK):
                data = self.buf[: len(self.buf) - keep]
                self.buf = self.buf[len(self.buf) - keep :]
                return data
            more = src.read(CHUNK)
            if not more:
                raise BodyError("multipart body ended before its closing boundary")
            self.buf += more


# --------------------------------------------------------------------------- store


class Store:
    """Object bodies on disk + metadata in sqlite3, all metadata access under one lock."""

    def __init__(self, data_dir: str):
        self.data_dir = os.path.abspath(data_dir)
        self.objects_dir = os.path.join(self.data_dir, "objects")
        self.tmp_dir = os.path.join(self.data_dir, "tmp")
        self.multipart_dir = os.path.join(self.data_dir, "multipart")
        for d in (self.objects_dir, self.tmp_dir, self.multipart_dir):
            os.makedirs(d, exist_ok=True)
        for name in os.listdir(self.tmp_dir):  # leftovers of a crash are never visible
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.tmp_dir, name))
        self.lock = threading.RLock()
        self.db = sqlite3.connect(
            os.path.join(self.data_dir, "metadata.sqlite3"), check_same_thread=False
        )
        self.db.row_factory = sqlite3.Row
        with self.lock, self.db:
            self.db.executescript(
                """
                PRAGMA journal_mode=WAL;
                CREATE TABLE IF NOT EXISTS buckets (
                    id TEXT PRIMARY KEY, name TEXT NOT NULL, owner TEXT NOT NULL DEFAULT '',
                    public INTEGER NOT NULL DEFAULT 0, file_size_limit INTEGER,
                    allowed_mime_types TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS objects (
                    bucket_id TEXT NOT NULL, name TEXT NOT NULL, id TEXT NOT NULL,
                    version TEXT NOT NULL, size INTEGER NOT NULL, mimetype TEXT,
                    cache_control TEXT, etag TEXT NOT NULL, user_metadata TEXT,
                    created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
                    last_accessed_at TEXT NOT NULL, PRIMARY KEY (bucket_id, name));
                CREATE TABLE IF NOT EXISTS uploads (
                    id TEXT PRIMARY KEY, bucket_id TEXT NOT NULL, key TEXT NOT NULL,
                    content_type TEXT, cache_control TEXT, user_metadata TEXT,
                    created_at TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS parts (
                    upload_id TEXT NOT NULL, part_number INTEGER NOT NULL, etag TEXT NOT NULL,
                    size INTEGER NOT NULL, created_at TEXT NOT NULL,
                    PRIMARY KEY (upload_id, part_number));
                """
            )

    # -- paths
    def tmp_path(self) -> str:
        return os.path.join(self.tmp_dir, uuid.uuid4().hex)

    def object_path(self, version: str) -> str:
        return os.path.join(self.objects_dir, version)

    def upload_dir(self, upload_id: str) -> str:
        return os.path.join(self.multipart_dir, upload_id)

    # -- buckets
    @staticmethod
    def bucket_json(row) -> dict:
        return {
            "id": row["id"],
            "name": row["name"],
            "owner": row["owner"],
            "public": bool(row["public"]),
            "file_size_limit": row["file_size_limit"],
            "allowed_mime_types": json.loads(row["allowed_mime_types"])
            if row["allowed_mime_types"]
            else None,
            "type": "STANDARD",
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
        }

    def create_bucket(
        self, bucket_id, name, public=False, file_size_limit=None, mimes=None
    ):
        ts = iso(now_utc())
        with self.lock, self.db:
            try:
                self.db.execute(
                    "INSERT INTO buckets VALUES (?, ?, '', ?, ?, ?, ?, ?)",
                    (
                        bucket_id,
                        name,
                        int(bool(public)),
                        file_size_limit,
                        json.dumps(mimes) if mimes is not None else None,
                        ts,
                        ts,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise bucket_already_exists() from exc

    def get_bucket(self, bucket_id):
        with self.lock:
            return self.db.execute(
                "SELECT * FROM buckets WHERE id = ?", (bucket_id,)
            ).fetchone()

    def require_bucket(self, bucket_id):
        row = self.get_bucket(bucket_id)
        if row is None:
            raise no_such_bucket()
        return row

    def list_buckets(self):
        with self.lock:
            return self.db.execute("SELECT * FROM buckets ORDER BY name").fetchall()

    def update_bucket(self, bucket_id, fields: dict):
        with self.lock, self.db:
            self.require_bucket(bucket_id)
            for col, value in fields.items():
                self.db.execute(
                    f"UPDATE buckets SET {col} = ? WHERE id = ?", (value, bucket_id)
                )
            self.db.execute(
                "UPDATE buckets SET updated_at = ? WHERE id = ?",
                (iso(now_utc()), bucket_id),
            )

    def delete_bucket(self, bucket_id):
        with self.lock, self.db:
            self.require_bucket(bucket_id)
            n = self.db.execute(
                "SELECT COUNT(*) FROM objects WHERE bucket_id = ?", (bucket_id,)
            ).fetchone()[0]
            if n:
                raise StorageError(
                    409,
                    "ResourceNotEmpty",
                    "The bucket you tried to delete is not empty",
                )
            self.db.execute("DELETE FROM buckets WHERE id = ?", (bucket_id,))

    def empty_bucket(self, bucket_id):
        with self.lock:
            self.require_bucket(bucket_id)
            names = [
                r["name"]
                for r in self.db.execute(
                    "SELECT name FROM objects WHERE bucket_id = ?", (bucket_id,)
                ).fetchall()
            ]
        self.delete_objects(bucket_id, names)

    # -- objects
    def get_object(self, bucket_id, name):
        with self.lock:
            return self.db.execute(
                "SELECT * FROM objects WHERE bucket_id = ? AND name = ?",
                (bucket_id, name),
            ).fetchone()

    def open_object(self, bucket_id, name):
        """Return (row, open file). The file stays readable even if replaced meanwhile."""
        with self.lock:
            row = self.get_object(bucket_id, name)
            if row is None:
                return None, None
            return row, open(self.object_path(row["version"]), "rb")

    def list_objects(self, bucket_id, prefix=""):
        with self.lock:
            rows = self.db.execute(
                "SELECT * FROM objects WHERE bucket_id = ? AND substr(name, 1, ?) = ?",
                (bucket_id, len(prefix), prefix),
            ).fetchall()
        return sorted(rows, key=lambda r: r["name"])

    def commit_object(
        self,
        bucket_id,
        name,
        tmp_path,
        *,
        size,
        etag,
        mimetype,
        cache_control,
        user_metadata=None,
        upsert=True,
    ):
        """Atomically publish ``tmp_path`` as the object's new content."""
        version = uuid.uuid4().hex
        ts = iso(now_utc())
        with self.lock:
            try:
                with self.db:
                    self.require_bucket(bucket_id)
                    old = self.get_object(bucket_id, name)
                    if old is not None and not upsert:
                        raise key_already_exists()
                    os.replace(tmp_path, self.object_path(version))
                    md = (
                        json.dumps(user_metadata) if user_metadata is not None else None
                    )
                    if old is None:
                        self.db.execute(
                            "INSERT INTO objects VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (
                                bucket_id,
                                name,
                                str(uuid.uuid4()),
                                version,
                                size,
                                mimetype,
                                cache_control,
                                etag,
                                md,
                                ts,
                                ts,
                                ts,
                            ),
                        )
                    else:
                        self.db.execute(
                            "UPDATE objects SET version = ?, size = ?, mimetype = ?,"
                            " cache_control = ?, etag = ?, user_metadata = ?, updated_at = ?,"
                            " last_accessed_at = ? WHERE bucket_id = ? AND name = ?",
                            (
                                version,
                                size,
                                mimetype,
                                cache_control,
                                etag,
                                md,
                                ts,
                                ts,
                                bucket_id,
                                name,
                            ),
                        )
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(self.object_path(version))
                raise
            if old is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self.object_path(old["version"]))
            return self.get_object(bucket_id, name)

    def delete_objects(self, bucket_id, names):
        deleted = []
        with self.lock:
            with self.db:
                for name in dict.fromkeys(names):
                    row = self.get_object(bucket_id, name)
                    if row is None:
                        continue
                    self.db.execute(
                        "DELETE FROM objects WHERE bucket_id = ? AND name = ?",
                        (bucket_id, name),
                    )
                    deleted.append(row)
            for row in deleted:
                with contextlib.suppress(OSError):
                    os.unlink(self.object_path(row["version"]))
        return deleted

    def copy_object(self, src_bucket, src_key, dst_bucket, dst_key, *, move, upsert):
        with self.lock:
            src = self.get_object(src_bucket, src_key)
            if src is None:
                raise no_such_key()
            self.require_bucket(dst_bucket)
            if not upsert and self.get_object(dst_bucket, dst_key) is not None:
                raise key_already_exists()
            tmp = self.tmp_path()
            try:  # object files are immutable (only ever replaced), so a hard link is a copy
                os.link(self.object_path(src["version"]), tmp)
            except OSError:
                shutil.copyfile(self.object_path(src["version"]), tmp)
            try:
                row = self.commit_object(
                    dst_bucket,
                    dst_key,
                    tmp,
                    size=src["size"],
                    etag=src["etag"],
                    mimetype=src["mimetype"],
                    cache_control=src["cache_control"],
                    user_metadata=json.loads(src["user_metadata"])
                    if src["user_metadata"]
                    else None,
                    upsert=upsert,
                )
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            if move and (src_bucket, src_key) != (dst_bucket, dst_key):
                self.delete_objects(src_bucket, [src_key])
            return row

    # -- multipart uploads (S3)
    def create_upload(self, bucket_id, key, content_type, cache_control, user_metadata):
        upload_id = uuid.uuid4().hex
        with self.lock, self.db:
            self.require_bucket(bucket_id)
            os.makedirs(self.upload_dir(upload_id))
            self.db.execute(
                "INSERT INTO uploads VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    upload_id,
                    bucket_id,
                    key,
                    content_type,
                    cache_control,
                    json.dumps(user_metadata) if user_metadata else None,
                    iso(now_utc()),
                ),
            )
        return upload_id

    def get_upload(self, upload_id, bucket_id=None, key=None):
        with self.lock:
            row = self.db.execute(
                "SELECT * FROM uploads WHERE id = ?", (upload_id,)
            ).fetchone()
        if (
            row is None
            or (bucket_id is not None and row["bucket_id"] != bucket_id)
            or (key is not None and row["key"] != key)
        ):
            raise no_such_upload()
        return row

    def parts_size(self, upload_id, exclude_part=None) -> int:
        with self.lock:
            return self.db.execute(
                "SELECT COALESCE(SUM(size), 0) FROM parts WHERE upload_id = ? AND part_number != ?",
                (upload_id, exclude_part if exclude_part is not None else -1),
            ).fetchone()[0]

    def commit_part(self, upload_id, part_number, tmp_path, size, etag):
        with self.lock, self.db:
            self.get_upload(upload_id)
            os.replace(
                tmp_path, os.path.join(self.upload_dir(upload_id), str(part_number))
            )
            self.db.execute(
                "INSERT OR REPLACE INTO parts VALUES (?, ?, ?, ?, ?)",
                (upload_id, part_number, etag, size, iso(now_utc())),
            )

    def list_parts(self, upload_id):
        with self.lock:
            return self.db.execute(
                "SELECT * FROM parts WHERE upload_id = ? ORDER BY part_number",
                (upload_id,),
            ).fetchall()

    def list_uploads(self, bucket_id, prefix=""):
        with self.lock:
            rows = self.db.execute(
                "SELECT * FROM uploads WHERE bucket_id = ? AND substr(key, 1, ?) = ?",
                (bucket_id, len(prefix), prefix),
            ).fetchall()
        return sorted(rows, key=lambda r: (r["key"], r["created_at"], r["id"]))

    def drop_upload(self, upload_id):
        with self.lock:
            with self.db:
                self.db.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
                self.db.execute("DELETE FROM uploads WHERE id = ?", (upload_id,))
            shutil.rmtree(self.upload_dir(upload_id), ignore_errors=True)


# --------------------------------------------------------------------------- object metadata views


def metadata_json(row) -> dict:
    return {
        "eTag": row["etag"],
        "size": row["size"],
        "mimetype": row["mimetype"],
        "cacheControl": row["cache_control"],
        "lastModified": row["updated_at"],
        "contentLength": row["size"],
        "httpStatusCode": 200,
    }


def object_json(row) -> dict:
    return {
        "bucket_id": row["bucket_id"],
        "name": row["name"],
        "owner": "",
        "owner_id": "",
        "version": row["version"],
        "id": row["id"],
        "updated_at": row["updated_at"],
        "created_at": row["created_at"],
        "last_accessed_at": row["last_accessed_at"],
        "metadata": metadata_json(row),
        "user_metadata": json.loads(row["user_metadata"])
        if row["user_metadata"]
        else None,
    }


def parse_range(header: str | None, size: int):
    """Return (start, end_inclusive) or None for the whole body; raise on unsatisfiable."""
    if not header:
        return None
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not m or (not m.group(1) and not m.group(2)):
        return None  # ignore unsupported forms (multi-range) like S3 does for junk
    if m.group(1):
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) else size - 1
    else:
        suffix = int(m.group(2))
        if suffix == 0:
            raise ValueError("unsatisfiable")
        start, end = max(size - suffix, 0), size - 1
    if start >= size or start > end:
        raise ValueError("unsatisfiable")
    return start, min(end, size - 1)


# --------------------------------------------------------------------------- the server


class StorageServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address,
        *,
        data_dir: str,
        service_key: str,
        jwt_secret: str,
        anon_key: str | None = None,
        file_size_limit: int | None = DEFAULT_FILE_SIZE_LIMIT,
        standard_upload_limit: int | None = None,
        s3_access_key: str | None = None,
        s3_secret_key: str | None = None,
        s3_region: str = "local",
        require_apikey: bool = True,
        verify_s3_signature: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        verbose: bool = False,
    ):
        super().__init__(address, StorageRequestHandler)
        if ssl_context is not None:
            self.socket = ssl_context.wrap_socket(self.socket, server_side=True)
        self.store = Store(data_dir)
        self.service_key = service_key
        self.jwt_secret = jwt_secret
        self.api_keys = {k for k in (service_key, anon_key) if k}
        self.file_size_limit = file_size_limit
        self.standard_upload_limit = standard_upload_limit
        self.s3_access_key = s3_access_key
        self.s3_secret_key = s3_secret_key
        self.s3_region = s3_region
        self.require_apikey = require_apikey
        self.verify_s3_signature = verify_s3_signature
        self.scheme = "https" if ssl_context is not None else "http"
        self.verbose = verbose
        self.stats_lock = threading.Lock()
        self.stats: dict[str, int] = {}

    def count(self, name: str) -> None:
        with self.stats_lock:
            self.stats[name] = self.stats.get(name, 0) + 1

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"{self.scheme}://{host}:{port}"

    def bucket_limit(self, bucket_row, *, standard: bool) -> int | None:
        limits = [
            self.file_size_limit,
            bucket_row["file_size_limit"] if bucket_row else None,
        ]
        if standard:
            limits.append(self.standard_upload_limit)
        limits = [x for x in limits if x is not None]
        return min(limits) if limits else None

    def handle_error(self, request, client_address):  # quieter than the default
        if self.verbose:
            super().handle_error(request, client_address)


class StorageRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "supabase-storage-local/1.0"
    timeout = 120
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: StorageServer

    # ------------------------------------------------------------------ plumbing
    def log_message(self, format, *args):
        if self.server.verbose:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def do_GET(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    def do_OPTIONS(self):
        self._dispatch()

    def _dispatch(self):
        self._responded = False
        self._rest_role = "service_role"
        self._in_rest_upload = False
        try:
            self.body = BodyReader(self.rfile, self.headers)
        except BodyError:
            self.close_connection = True
            self._send_json(
                400,
                {
                    "statusCode": "400",
                    "error": "Bad Request",
                    "message": "invalid Content-Length",
                },
            )
            return
        split = urllib.parse.urlsplit(self.path)
        self.raw_path = split.path
        self.raw_query = split.query
        self.query = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
        is_s3 = self.raw_path == S3_PREFIX or self.raw_path.startswith(S3_PREFIX + "/")
        try:
            if is_s3:
                self._handle_s3()
            elif self.raw_path == REST_PREFIX or self.raw_path.startswith(
                REST_PREFIX + "/"
            ):
                self._handle_rest(self.raw_path[len(REST_PREFIX) :])
            else:
                raise GatewayError(
                    404, {"message": "no Route matched with those values"}
                )
            self._drain_quietly()
        except BodyError:
            self.close_connection = True
            self.server.count("incomplete_bodies")
            if not self._responded:
                with contextlib.suppress(OSError):
                    self._send_json(
                        400,
                        StorageError(
                            400, "InvalidRequest", "Invalid or incomplete request body"
                        ).body(),
                    )
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001
            if self._responded:
                self.close_connection = True
                return
            if not isinstance(exc, (StorageError, GatewayError, S3Error)):
                if self.server.verbose:
                    traceback.print_exc()
                exc = StorageError(
                    500, "InternalError", f"Internal server error: {exc}"
                )
            if (
                self._in_rest_upload
                and isinstance(exc, StorageError)
                and exc.status < 500
                and not self.body.done
            ):
                # storage-api refuses an upload before reading its body and keeps the connection open,
                # with the request stream paused: nothing more sent on it is answered.
                with contextlib.suppress(OSError):
                    self._send_json(exc.http_status, exc.body())
                self._hold_connection()
                return
            self._drain_quietly()
            with contextlib.suppress(OSError):
                if is_s3:
                    if isinstance(exc, StorageError):
                        exc = to_s3_error(exc)
                    elif isinstance(exc, GatewayError):
                        exc = S3Error(exc.http_status, "InvalidRequest", str(exc))
                    self._send_s3_error(exc)
                elif isinstance(exc, GatewayError):
                    self._send_json(exc.http_status, exc.body)
                elif isinstance(exc, StorageError):
                    self._send_json(exc.http_status, exc.body())
                else:  # an S3Error raised on a REST route: shouldn't happen
                    self._send_json(
                        400, StorageError(exc.status, exc.code, exc.message).body()
                    )

    def _hold_connection(self):
        """Answer nothing more on this connection: swallow what arrives until the client closes it (or the
        handler's timeout), then close it."""
        self.server.count("held_connections")
        self.close_connection = True
        try:
            while self.rfile.read1(CHUNK):
                pass
        except (OSError, ValueError):
            pass

    def _drain_quietly(self):
        try:
            self.body.drain()
        except (BodyError, OSError):
            self.close_connection = True

    def _start(self, status: int, headers: dict):
        self._responded = True
        self.send_response(status)
        for k, v in headers.items():
            if v is not None and v != "":
                self.send_header(k, str(v))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def _send_bytes(self, status: int, body: bytes, content_type: str, headers=None):
        h = {"Content-Type": content_type, "Content-Length": len(body)}
        h.update(headers or {})
        self._start(status, h)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, obj, headers=None):
        body = json.dumps(obj, separators=(",", ":")).encode()
        self._send_bytes(status, body, "application/json; charset=utf-8", headers)

    def _send_empty(self, status: int, headers=None):
        h = {"Content-Length": 0}
        h.update(headers or {})
        self._start(status, h)

    def _send_file(self, status: int, fobj, start: int, length: int, headers: dict):
        h = dict(headers)
        h["Content-Length"] = length
        self._start(status, h)
        if self.command == "HEAD":
            return
        fobj.seek(start)
        left = length
        while left > 0:
            data = fobj.read(min(CHUNK, left))
            if not data:
                break
            self.wfile.write(data)
            left -= len(data)

    def _read_json(self) -> dict:
        raw = bytearray()
        while True:
            data = self.body.read(CHUNK)
            if not data:
                break
            raw += data
            if len(raw) > MAX_JSON_BODY:
                raise invalid_request("Request body is too large")
        if not raw.strip():
            return {}
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            raise GatewayError(
                400,
                {
                    "statusCode": "400",
                    "code": "FST_ERR_CTP_INVALID_JSON_BODY",
                    "error": "Bad Request",
                    "message": f"Body is not valid JSON: {exc}",
                },
            ) from exc
        if not isinstance(obj, dict):
            raise invalid_request("body must be object")
        return obj

    # ------------------------------------------------------------------ REST auth
    def _require_rest_auth(self):
        srv = self.server
        if srv.require_apikey:
            apikey = self.headers.get("apikey") or self.query.get("apikey")
            if not apikey:
                raise GatewayError(
                    401,
                    {
                        "message": "No API key found in request",
                        "hint": "No `apikey` request header or url param was found.",
                    },
                )
            if apikey not in srv.api_keys:
                raise GatewayError(
                    401,
                    {
                        "message": "Invalid API key",
                        "hint": "Double check your Supabase `anon` or `service_role` API key.",
                    },
                )
        auth = self.headers.get("Authorization") or ""
        token = re.sub(r"^Bearer\s+", "", auth, flags=re.IGNORECASE).strip()
        if token and hmac.compare_digest(token.encode(), srv.service_key.encode()):
            return  # an opaque (non-JWT) service key
        try:
            payload = jwt_decode(token, srv.jwt_secret)
        except JWTError as exc:
            raise access_denied(str(exc)) from exc
        self._rest_role = str(payload.get("role") or "")

    # ------------------------------------------------------------------ REST routing
    def _handle_rest(self, path: str):
        method = self.command
        dsegs = [urllib.parse.unquote(s) for s in path.split("/")[1:]]
        head = dsegs[0] if dsegs else ""

        if (
            head in ("status", "health")
            and len(dsegs) == 1
            and method in ("GET", "HEAD")
        ):
            return self._send_json(200, {"status": "ok"} if head == "health" else {})

        if head == "object" and len(dsegs) >= 3:
            kind = dsegs[1]
            # public / signed routes: no apikey, no JWT
            if kind == "sign" and method in ("GET", "HEAD") and len(dsegs) >= 4:
                return self._rest_get_signed(dsegs[2], "/".join(dsegs[3:]))
            if kind == "public" and method in ("GET", "HEAD") and len(dsegs) >= 4:
                return self._rest_get_object(dsegs[2], "/".join(dsegs[3:]), public=True)
            if (
                kind == "info"
                and dsegs[2] == "public"
                and method == "GET"
                and len(dsegs) >= 5
            ):
                return self._rest_info(dsegs[3], "/".join(dsegs[4:]), public=True)

        if method == "OPTIONS":
            return self._send_empty(
                204,
                {
                    "Access-Control-Allow-Origin": "*",
                    "Access-Control-Allow-Methods": "GET,HEAD,PUT,POST,DELETE",
                    "Access-Control-Allow-Headers": "*",
                },
            )

        self._require_rest_auth()

        if head == "bucket":
            return self._rest_bucket(method, dsegs[1:])
        if head == "object":
            return self._rest_object(method, dsegs[1:])
        raise GatewayError(
            404,
            {
                "message": f"Route {method}:{REST_PREFIX}{path} not found",
                "error": "Not Found",
                "statusCode": 404,
            },
        )

    def _not_found_route(self):
        raise GatewayError(
            404,
            {
                "message": f"Route {self.command}:{self.raw_path} not found",
                "error": "Not Found",
                "statusCode": 404,
            },
        )

    # ------------------------------------------------------------------ buckets
    def _rest_bucket(self, method: str, segs: list[str]):
        store = self.server.store
        segs = [s for s in segs if s != ""] if segs and segs[-1] == "" else segs
        if self._rest_role == "anon":  # RLS on storage.buckets with no policies: sees none, creates none
            if not segs and method == "GET":
                return self._send_json(200, [])
            if not segs and method == "POST":
                self._read_json()
                raise rls_violation()
            raise no_such_bucket()
        if not segs:
            if method == "GET":
                return self._send_json(
                    200, [store.bucket_json(r) for r in store.list_buckets()]
                )
            if method == "POST":
                body = self._read_json()
                name = body.get("name")
                if not isinstance(name, str):
                    raise invalid_request("body must have required property 'name'")
                bucket_id = body.get("id") or name
                if not valid_bucket_name(bucket_id):
                    raise StorageError(
                        400, "InvalidBucketName", "Bucket name invalid", "Invalid Input"
                    )
                limit = self._bucket_limit_arg(body)
                mimes = body.get("allowed_mime_types")
                store.create_bucket(
                    bucket_id,
                    name,
                    bool(body.get("public", False)),
                    limit,
                    [m for m in mimes if m] if mimes else mimes,
                )
                return self._send_json(200, {"name": name})
            return self._not_found_route()
        bucket_id = segs[0]
        if len(segs) == 1:
            if method == "GET":
                return self._send_json(
                    200, store.bucket_json(store.require_bucket(bucket_id))
                )
            if method == "PUT":
                body = self._read_json()
                fields = {}
                if "public" in body:
                    fields["public"] = int(bool(body["public"]))
                if "file_size_limit" in body:
                    fields["file_size_limit"] = self._bucket_limit_arg(body)
                if "allowed_mime_types" in body:
                    mimes = body["allowed_mime_types"]
                    fields["allowed_mime_types"] = (
                        json.dumps(mimes) if mimes is not None else None
                    )
                store.update_bucket(bucket_id, fields)
                return self._send_json(200, {"message": "Successfully updated"})
            if method == "DELETE":
                store.delete_bucket(bucket_id)
                return self._send_json(200, {"message": "Successfully deleted"})
        if len(segs) == 2 and segs[1] == "empty" and method == "POST":
            store.empty_bucket(bucket_id)
            return self._send_json(200, {"message": "Successfully emptied"})
        return self._not_found_route()

    @staticmethod
    def _bucket_limit_arg(body: dict):
        value = body.get("file_size_limit")
        try:
            limit = parse_size(value)
        except ValueError as exc:
            raise invalid_request(
                "Invalid file size format, hint: use 20GB / 20MB / 30KB / 3B"
            ) from exc
        return limit if limit else None  # 0 / null mean "no bucket limit"

    # ------------------------------------------------------------------ objects
    def _rest_object(self, method: str, segs: list[str]):
        if self._rest_role == "anon":  # no bucket is visible to it
            raise no_such_bucket()
        kind = segs[0] if segs else ""
        n = len(segs)
        if kind == "list" and n == 2 and method == "POST":
            return self._rest_list(segs[1])
        if kind == "sign" and method == "POST":
            if n == 2:
                return self._rest_sign_many(segs[1])
            if n >= 3:
                return self._rest_sign(segs[1], "/".join(segs[2:]))
        if kind == "info" and method == "GET":
            rest = segs[2:] if n >= 2 and segs[1] == "authenticated" else segs[1:]
            if len(rest) >= 2:
                return self._rest_info(rest[0], "/".join(rest[1:]))
        if kind == "authenticated" and method in ("GET", "HEAD") and n >= 3:
            return self._rest_get_object(segs[1], "/".join(segs[2:]))
        if kind in ("move", "copy") and n == 1 and method == "POST":
            return self._rest_move_copy(kind)
        if n == 1 and method == "DELETE":
            return self._rest_delete_many(segs[0])
        if n >= 2:
            bucket, key = segs[0], "/".join(segs[1:])
            if method in ("GET", "HEAD"):
                return self._rest_get_object(bucket, key)
            if method == "POST":
                return self._rest_upload(bucket, key, upsert=self._is_upsert())
            if method == "PUT":
                return self._rest_upload(bucket, key, upsert=True)
            if method == "DELETE":
                store = self.server.store
                if not store.delete_objects(bucket, [key]):
                    store.require_bucket(bucket)
                    raise no_such_key()
                return self._send_json(200, {"message": "Successfully deleted"})
        return self._not_found_route()

    def _is_upsert(self) -> bool:
        return (self.headers.get("x-upsert") or "").lower() == "true"

    def _rest_upload(self, bucket_id: str, key: str, *, upsert: bool):
        self._in_rest_upload = True
        srv = self.server
        store = srv.store
        check_key(key)
        bucket = store.require_bucket(bucket_id)
        if not upsert and store.get_object(bucket_id, key) is not None:
            raise key_already_exists()  # storage checks this before reading the body
        limit = srv.bucket_limit(bucket, standard=True)
        if key.endswith("/.emptyFolderPlaceholder"):
            limit = 0
        content_type = self.headers.get("Content-Type") or ""
        tmp = store.tmp_path()
        try:
            user_metadata = None
            if content_type.lower().startswith("multipart/form-data"):
                _, params = _parse_header_params(content_type)
                boundary = params.get("boundary")
                if not boundary:
                    raise invalid_request("No content provided")
                form = MultipartFormReader(self.body, boundary)
                fields: dict[str, str] = {}
                got_file = False
                size = 0
                md5 = ""
                truncated = False
                mimetype = None
                for headers, part in form.parts():
                    _, disp = _parse_header_params(
                        headers.get("content-disposition", "")
                    )
                    name = disp.get("name", "")
                    if "filename" in disp and not got_file:
                        got_file = True
                        mimetype = (
                            headers.get("content-type") or "application/octet-stream"
                        )
                        size, md5, truncated = stream_to_file(part, tmp, limit, [])
                    else:
                        value = bytearray()
                        while True:
                            data = part.read(CHUNK)
                            if not data:
                                break
                            if len(value) < 1024 * 1024 + 1:
                                value += data
                        if len(value) > 1024 * 1024:
                            raise entity_too_large()
                        fields[name] = value.decode("utf-8", "replace")
                if not got_file:
                    raise invalid_request("No content provided")
                mimetype = fields.get("contentType") or mimetype
                cache_time = fields.get("cacheControl")
                cache_control = f"max-age={cache_time}" if cache_time else "no-cache"
                custom = fields.get("metadata") or fields.get("userMetadata")
                if custom:
                    with contextlib.suppress(ValueError):
                        user_metadata = json.loads(custom)
            else:
                mimetype = content_type or "application/octet-stream"
                cache_control = self.headers.get("Cache-Control") or "no-cache"
                # uploader.ts: a binary body is checked against the limit only through its
                # Content-Length; a chunked one has no size up front and no later truncation
                # signal, so it is stored whatever its size.
                declared = self.body.declared_length
                if limit is not None and declared is not None and declared > limit:
                    raise entity_too_large()
                size, md5, truncated = stream_to_file(self.body, tmp, None, [])
                custom = self.headers.get("x-metadata")
                if custom:
                    with contextlib.suppress(ValueError, binascii.Error):
                        user_metadata = json.loads(base64.b64decode(custom))
            if truncated:
                raise entity_too_large()
            self._check_mime(bucket, mimetype)
            row = store.commit_object(
                bucket_id,
                key,
                tmp,
                size=size,
                etag=f'"{md5}"',
                mimetype=mimetype,
                cache_control=cache_control,
                user_metadata=user_metadata,
                upsert=upsert,
            )
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._send_json(200, {"Id": row["id"], "Key": f"{bucket_id}/{key}"})

    @staticmethod
    def _check_mime(bucket, mimetype: str):
        if not bucket["allowed_mime_types"]:
            return
        allowed = json.loads(bucket["allowed_mime_types"])
        if not allowed:
            return
        base = mimetype.split(";", 1)[0].strip().lower()
        typ, _, sub = base.partition("/")
        for a in allowed:
            at, _, asub = a.lower().partition("/")
            if at == typ and asub in ("*", sub):
                return
        raise StorageError(
            415,
            "InvalidMimeType",
            f"mime type {mimetype} is not supported",
            "invalid_mime_type",
        )

    def _object_headers(self, row) -> dict:
        return {
            "Content-Type": row["mimetype"] or "application/octet-stream",
            "ETag": row["etag"],
            "Last-Modified": http_date(row["updated_at"]),
            "Cache-Control": row["cache_control"] or "no-cache",
            "Accept-Ranges": "bytes",
        }

    def _serve_object(self, row, fobj, extra_headers=None, *, s3=False):
        headers = self._object_headers(row)
        headers.update(extra_headers or {})
        size = row["size"]
        try:
            rng = parse_range(self.headers.get("Range"), size)
        except ValueError:
            if s3:
                raise S3Error(
                    416, "InvalidRange", "The requested range is not satisfiable"
                ) from None
            raise StorageError(
                400, "InvalidRange", "invalid range provided", "invalid_range"
            ) from None
        if rng is None:
            return self._send_file(200, fobj, 0, size, headers)
        start, end = rng
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return self._send_file(206, fobj, start, end - start + 1, headers)

    def _rest_get_object(
        self, bucket_id: str, key: str, *, public=False, extra_headers=None
    ):
        store = self.server.store
        check_key(key)  # findObject: reads refuse such keys too
        bucket = store.get_bucket(bucket_id)
        if bucket is None or (public and not bucket["public"]):
            raise no_such_bucket()
        row, fobj = store.open_object(bucket_id, key)
        if row is None:
            raise no_such_key()
        with fobj:
            extra = dict(extra_headers or {})
            download = self.query.get("download")
            if download is not None:
                if download == "":
                    extra["Content-Disposition"] = "attachment;"
                else:
                    enc = urllib.parse.quote(download, safe="")
                    extra["Content-Disposition"] = (
                        f"attachment; filename={enc}; filename*=UTF-8''{enc};"
                    )
            self._serve_object(row, fobj, extra)

    def _rest_info(self, bucket_id: str, key: str, *, public=False):
        store = self.server.store
        check_key(key)
        bucket = store.get_bucket(bucket_id)
        if bucket is None or (public and not bucket["public"]):
            raise no_such_bucket()
        row = store.get_object(bucket_id, key)
        if row is None:
            raise no_such_key()
        body = {
            "id": row["id"],
            "name": row["name"],
            "version": row["version"],
            "bucket_id": row["bucket_id"],
            "size": row["size"],
            "content_type": row["mimetype"],
            "cache_control": row["cache_control"],
            "etag": row["etag"],
            "metadata": json.loads(row["user_metadata"])
            if row["user_metadata"]
            else None,
            "last_modified": row["updated_at"],
            "created_at": row["created_at"],
        }
        self._send_json(
            200,
            body,
            {
                "ETag": row["etag"],
                "Last-Modified": http_date(row["updated_at"]),
                "Cache-Control": row["cache_control"],
            },
        )

    def _rest_list(self, bucket_id: str):
        body = self._read_json()
        prefix = body.get("prefix")
        if not isinstance(prefix, str):
            raise invalid_request("body must have required property 'prefix'")
        if prefix and not prefix.endswith("/"):
            prefix += "/"  # ObjectStorage.searchObjects: the prefix is always a folder
        search = body.get("search") or ""
        try:
            limit = min(int(body.get("limit") or 100), 1500)
            offset = max(int(body.get("offset") or 0), 0)
        except (TypeError, ValueError) as exc:
            raise invalid_request("limit and offset must be integers") from exc
        if limit < 1:
            raise invalid_request("body/limit must be >= 1")
        sort = body.get("sortBy") or {}
        column = (sort.get("column") or "name").lower()
        if column not in ("name", "updated_at", "created_at", "last_accessed_at"):
            column = "name"
        desc = (sort.get("order") or "asc").lower() == "desc"

        match = (prefix + search).lower()
        folders: dict[str, str] = {}
        files = []
        for row in self.server.store.list_objects(bucket_id):
            if not row["name"].lower().startswith(match):
                continue
            rel = row["name"][len(prefix) :]
            idx = rel.find("/", len(search))
            if idx >= 0:
                folder = rel[:idx]
                folders.setdefault(folder.lower(), folder)
            else:
                files.append(row)

        def file_entry(row):
            return {
                "name": row["name"][len(prefix) :],
                "id": row["id"],
                "updated_at": row["updated_at"],
                "created_at": row["created_at"],
                "last_accessed_at": row["last_accessed_at"],
                "metadata": metadata_json(row),
            }

        def folder_entry(name):
            return {
                "name": name,
                "id": None,
                "updated_at": None,
                "created_at": None,
                "last_accessed_at": None,
                "metadata": None,
            }

        if (
            column == "name"
        ):  # storage.search: folders and files interleaved by lower(name)
            entries = [((k + "/"), folder_entry(v)) for k, v in folders.items()]
            entries += [
                (r["name"][len(prefix) :].lower(), file_entry(r)) for r in files
            ]
            entries.sort(key=lambda e: e[0].encode(), reverse=desc)
            result = [e for _, e in entries]
        else:  # folders first, then files by the column
            fl = sorted(folders.values(), key=lambda v: v.encode(), reverse=desc)
            fs = sorted(files, key=lambda r: (r[column], r["name"]), reverse=desc)
            result = [folder_entry(v) for v in fl] + [file_entry(r) for r in fs]
        self._send_json(200, result[offset : offset + limit])

    def _rest_delete_many(self, bucket_id: str):
        body = self._read_json()
        prefixes = body.get("prefixes")
        if not isinstance(prefixes, list) or not all(
            isinstance(p, str) for p in prefixes
        ):
            raise invalid_request("body must have required property 'prefixes'")
        if not prefixes:
            raise invalid_request("body/prefixes must NOT have fewer than 1 items")
        deleted = self.server.store.delete_objects(bucket_id, prefixes)
        self._send_json(200, [object_json(r) for r in deleted])

    def _rest_move_copy(self, kind: str):
        body = self._read_json()
        bucket_id = body.get("bucketId")
        src = body.get("sourceKey")
        dst = body.get("destinationKey")
        if not all(isinstance(x, str) and x for x in (bucket_id, src, dst)):
            raise invalid_request(
                "body must have required properties bucketId, sourceKey, destinationKey"
            )
        check_key(dst)
        dst_bucket = body.get("destinationBucket") or bucket_id
        store = self.server.store
        store.require_bucket(bucket_id)
        if kind == "move":
            if (bucket_id, src) != (dst_bucket, dst):
                store.copy_object(
                    bucket_id, src, dst_bucket, dst, move=True, upsert=False
                )
            elif store.get_object(bucket_id, src) is None:
                raise no_such_key()
            return self._send_json(200, {"message": "Successfully moved"})
        row = store.copy_object(
            bucket_id, src, dst_bucket, dst, move=False, upsert=self._is_upsert()
        )
        return self._send_json(200, {"Id": row["id"], "Key": f"{dst_bucket}/{dst}"})

    # ------------------------------------------------------------------ signed URLs
    def _expires_in(self, body: dict) -> int:
        try:
            value = int(body.get("expiresIn"))
        except (TypeError, ValueError) as exc:
            raise invalid_request("body/expiresIn must be integer") from exc
        if value < 1:
            raise invalid_request("body/expiresIn must be >= 1")
        return value

    def _sign(self, url: str, expires_in: int) -> str:
        now = int(time.time())
        return jwt_encode(
            {"url": url, "scope": "download", "iat": now, "exp": now + expires_in},
            self.server.jwt_secret,
        )

    def _rest_sign(self, bucket_id: str, key: str):
        body = self._read_json()
        expires_in = self._expires_in(body)
        check_key(key)
        store = self.server.store
        store.require_bucket(bucket_id)
        if store.get_object(bucket_id, key) is None:
            raise no_such_key()
        url = f"{bucket_id}/{key}"
        token = self._sign(url, expires_in)
        self._send_json(200, {"signedURL": f"/object/sign/{url}?token={token}"})

    def _rest_sign_many(self, bucket_id: str):
        body = self._read_json()
        expires_in = self._expires_in(body)
        paths = body.get("paths")
        if not isinstance(paths, list) or not paths:
            raise invalid_request("body/paths must NOT have fewer than 1 items")
        store = self.server.store
        out = []
        for p in paths:
            if isinstance(p, str) and store.get_object(bucket_id, p) is not None:
                url = f"{bucket_id}/{p}"
                out.append(
                    {
                        "error": None,
                        "path": p,
                        "signedURL": f"/object/sign/{url}?token={self._sign(url, expires_in)}",
                    }
                )
            else:
                out.append(
                    {
                        "error": "Either the object does not exist or you do not have "
                        "access to it",
                        "path": p,
                        "signedURL": None,
                    }
                )
        self._send_json(200, out)

    def _rest_get_signed(self, bucket_id: str, key: str):
        token = self.query.get("token")
        if not token:
            raise invalid_request("querystring must have required property 'token'")
        try:
            payload = jwt_decode(token, self.server.jwt_secret)
        except JWTError as exc:
            raise StorageError(400, "InvalidJWT", str(exc)) from exc
        scope = payload.get("scope")  # isDownloadScopedToken: legacy tokens carry no scope
        if scope != "download" and (scope is not None or "upsert" in payload):
            raise StorageError(
                400, "InvalidSignature", "Token is not scoped for download"
            )
        if payload.get("url") != f"{bucket_id}/{key}":
            raise StorageError(400, "InvalidSignature", "Invalid signature")
        exp = payload.get("exp")
        extra = {}
        if isinstance(exp, (int, float)):
            extra["Expires"] = email.utils.formatdate(exp, usegmt=True)
        return self._rest_get_object(bucket_id, key, extra_headers=extra)

    # ------------------------------------------------------------------ S3 protocol
    def _handle_s3(self):
        srv = self.server
        self._verify_sigv4()
        path = self.raw_path[len(S3_PREFIX) :].lstrip("/")
        bucket_raw, _, key_raw = path.partition("/")
        bucket = urllib.parse.unquote(bucket_raw)
        key = urllib.parse.unquote(key_raw)
        q = self.query
        m = self.command
        if not bucket:
            if m == "GET":
                return self._s3_list_buckets()
            raise S3Error(
                405,
                "MethodNotAllowed",
                "The specified method is not allowed against this resource.",
            )
        if not key:
            if m == "GET" and "uploads" in q:
                return self._s3_list_uploads(bucket)
            if m == "GET" and "location" in q:
                srv.store.require_bucket(bucket)
                return self._send_xml(200, "LocationConstraint", [], text=srv.s3_region)
            if m == "GET" and "versioning" in q:
                srv.store.require_bucket(bucket)
                return self._send_xml(
                    200, "VersioningConfiguration", [xml_el("Status", "Suspended")]
                )
            if m == "GET":
                return self._s3_list_objects(bucket, v2=q.get("list-type") == "2")
            if m == "HEAD":
                srv.store.require_bucket(bucket)
                return self._send_empty(200, {"x-amz-bucket-region": srv.s3_region})
            if m == "PUT":
                if not valid_bucket_name(bucket):
                    raise S3Error(400, "InvalidBucketName", "Bucket name invalid")
                srv.store.create_bucket(bucket, bucket)
                return self._send_empty(200, {"Location": f"/{bucket}"})
            if m == "DELETE":
                srv.store.delete_bucket(bucket)
                return self._send_empty(204)
            if m == "POST" and "delete" in q:
                return self._s3_delete_objects(bucket)
            raise S3Error(
                405,
                "MethodNotAllowed",
                "The specified method is not allowed against this resource.",
            )
        if m == "POST" and "uploads" in q:
            return self._s3_create_upload(bucket, key)
        if m == "POST" and "uploadId" in q:
            return self._s3_complete_upload(bucket, key, q["uploadId"])
        if m == "PUT" and "uploadId" in q and "partNumber" in q:
            return self._s3_upload_part(bucket, key, q["uploadId"], q["partNumber"])
        if m == "PUT" and self.headers.get("x-amz-copy-source"):
            return self._s3_copy_object(bucket, key)
        if m == "PUT":
            return self._s3_put_object(bucket, key)
        if m == "DELETE" and "uploadId" in q:
            return self._s3_abort_upload(bucket, key, q["uploadId"])
        if m == "DELETE":
            srv.store.require_bucket(bucket)
            srv.store.delete_objects(bucket, [key])
            return self._send_empty(204)
        if m == "GET" and "uploadId" in q:
            return self._s3_list_parts(bucket, key, q["uploadId"])
        if m in ("GET", "HEAD"):
            return self._s3_get_object(bucket, key)
        raise S3Error(
            405,
            "MethodNotAllowed",
            "The specified method is not allowed against this resource.",
        )

    def _send_xml(
        self, status: int, root: str, children: list[str], *, text=None, headers=None
    ):
        if text is not None:
            body = (
                f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{S3_NS}">'
                f"{xml_text(text)}</{root}>"
            ).encode()
        else:
            body = xml_doc(root, children)
        self._send_bytes(status, body, "application/xml", headers)

    def _send_s3_error(self, err: S3Error):
        resource = self.raw_path[len(S3_PREFIX) :].strip("/")
        if self.command == "HEAD":
            return self._send_empty(err.status)
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error xmlns="{S3_NS}">'
            + xml_el("Code", err.code)
            + xml_el("Message", err.message)
            + xml_el("Resource", urllib.parse.unquote(resource))
            + xml_el("RequestId", uuid.uuid4().hex)
            + "</Error>"
        ).encode()
        self._send_bytes(err.status, body, "application/xml")

    # -- SigV4
    def _verify_sigv4(self):
        srv = self.server
        auth = self.headers.get("Authorization") or ""
        presigned = False
        # extractSignature: only an AWS4-HMAC-SHA256 header counts; anything else (a Bearer
        # token) falls through to the presigned query, then to 403 "Missing signature".
        if auth.startswith("AWS4-HMAC-SHA256 "):
            params = {}
            for item in auth[len("AWS4-HMAC-SHA256 ") :].split(","):
                k, _, v = item.strip().partition("=")
                params[k] = v
            credential = params.get("Credential")
            signed_headers = params.get("SignedHeaders")
            signature = params.get("Signature")
            amz_date = self.headers.get("x-amz-date")
            payload_hash = self.headers.get("x-amz-content-sha256") or EMPTY_SHA256
        elif "X-Amz-Credential" in self.query:
            presigned = True
            credential = self.query.get("X-Amz-Credential")
            signed_headers = self.query.get("X-Amz-SignedHeaders")
            signature = self.query.get("X-Amz-Signature")
            amz_date = self.query.get("X-Amz-Date")
            payload_hash = "UNSIGNED-PAYLOAD"
        else:
            raise S3Error(403, "AccessDenied", "Missing signature")
        if not srv.s3_access_key or not srv.s3_secret_key:  # createServerSignature
            raise S3Error(
                403,
                "AccessDenied",
                "Missing S3 Protocol Access Key ID or Secret Key Environment variables",
            )
        if not all(
            isinstance(x, str) and x
            for x in (credential, signed_headers, signature, amz_date)
        ):
            raise S3Error(400, "InvalidSignature", "Invalid signature format")
        cred = credential.split("/")
        if len(cred) != 5:
            raise S3Error(400, "InvalidSignature", "Invalid credentials")
        access_key, short_date, region, service, _ = cred
        # SignatureV4.validateCredentials (single-tenant credentials)
        if not hmac.compare_digest(access_key.encode(), srv.s3_access_key.encode()):
            raise S3Error(403, "AccessDenied", "Invalid Access Key")
        if service != "s3":
            raise S3Error(403, "AccessDenied", "Invalid Service")
        # SignatureV4.getSelectedRegion: the client's region is used for the scope only if it
        # is one of these; otherwise the server signs with its own, so the signatures differ.
        if region not in ("auto", "us-east-1", srv.s3_region, ""):
            region = srv.s3_region
        if presigned:
            try:
                expires = int(self.query.get("X-Amz-Expires", "0"))
                signed_at = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
                    tzinfo=dt.UTC
                )
            except ValueError as exc:
                raise S3Error(400, "InvalidSignature", "Invalid expiration") from exc
            if "X-Amz-Expires" in self.query and now_utc() > signed_at + dt.timedelta(
                seconds=expires
            ):
                raise S3Error(400, "ExpiredToken", "The provided token has expired.")
        self.s3_payload_hash = payload_hash
        if not srv.verify_s3_signature:
            return
        # canonical query string: every parameter but the signature, re-encoded per SigV4
        pairs = []
        for k, v in urllib.parse.parse_qsl(self.raw_query, keep_blank_values=True):
            if presigned and k == "X-Amz-Signature":
                continue
            pairs.append(
                (urllib.parse.quote(k, safe="-_.~"), urllib.parse.quote(v, safe="-_.~"))
            )
        canonical_query = "&".join(f"{k}={v}" for k, v in sorted(pairs))
        names = signed_headers.split(";")
        canonical_headers = ""
        for name in names:
            values = self.headers.get_all(name) or []
            value = ",".join(re.sub(r"\s+", " ", v.strip()) for v in values)
            canonical_headers += f"{name}:{value}\n"
        canonical_request = "\n".join(
            [
                self.command,
                self.raw_path,
                canonical_query,
                canonical_headers,
                ";".join(names),
                payload_hash,
            ]
        )
        scope = f"{short_date}/{region}/{service}/aws4_request"
        string_to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256",
                amz_date,
                scope,
                hashlib.sha256(canonical_request.encode()).hexdigest(),
            ]
        )
        key = ("AWS4" + srv.s3_secret_key).encode()
        for part in (short_date, region, service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise S3Error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature "
                "you provided. Check your key and signing method.",
            )

    # -- S3 bodies
    def _s3_body_to_file(self, path: str, limit: int | None, used: int = 0):
        """Stream the (possibly aws-chunked) body into ``path``; verify hashes/checksums."""
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        payload_hash = getattr(self, "s3_payload_hash", "UNSIGNED-PAYLOAD")
        reader = self.body
        chunked = "aws-chunked" in encoding or payload_hash.startswith("STREAMING-")
        if chunked:
            reader = AwsChunkedReader(self.body)
            self.server.count("aws_chunked_requests")
        hashers = []
        sha = None
        if re.fullmatch(r"[0-9a-f]{64}", payload_hash):
            sha = hashlib.sha256()
            hashers.append(sha)
        checksum_name = None
        checksum_expected = None
        for header, value in self.headers.items():
            h = header.lower()
            if h.startswith("x-amz-checksum-") and h not in (
                "x-amz-checksum-algorithm",
                "x-amz-checksum-type",
                "x-amz-checksum-mode",
            ):
                checksum_name, checksum_expected = h[len("x-amz-checksum-") :], value
        trailer = (self.headers.get("x-amz-trailer") or "").lower().strip()
        if trailer.startswith("x-amz-checksum-"):
            checksum_name = trailer[len("x-amz-checksum-") :]
        checker = make_checksum(checksum_name) if checksum_name else None
        if checker is not None:
            hashers.append(checker)
        declared = (
            self.headers.get("x-amz-decoded-content-length")
            if chunked
            else (self.body.declared_length)
        )
        if limit is not None and declared is not None and used + int(declared) > limit:
            raise StorageError(
                413, "EntityTooLarge", "The object exceeded the maximum allowed size"
            )
        try:
            size, md5, _ = stream_to_file(
                reader,
                path,
                None if limit is None else limit - used,
                hashers,
                stop_at_limit=True,
            )
        except LimitExceeded as exc:
            raise StorageError(
                413, "EntityTooLarge", "The object exceeded the maximum allowed size"
            ) from exc
        if chunked:
            self.server.count("aws_chunked_bodies_decoded")
            if trailer and checksum_expected is None:
                checksum_expected = reader.trailers.get(trailer)
            if declared is not None and int(declared) != size:
                raise S3Error(
                    400,
                    "IncompleteBody",
                    "You did not provide the number of bytes specified by the "
                    "Content-Length HTTP header.",
                )
        if sha is not None and sha.hexdigest() != payload_hash:
            raise S3Error(
                400,
                "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match what was "
                "computed.",
            )
        if checker is not None:
            if checksum_expected is None:
                raise S3Error(
                    400, "InvalidRequest", f"Missing checksum {checksum_name}"
                )
            if checker.b64digest() != checksum_expected:
                raise S3Error(
                    400,
                    "BadDigest",
                    f"The {checksum_name.upper()} you specified did not match the "
                    "calculated checksum.",
                )
            self.server.count(f"checksum_verified_{checksum_name}")
        content_md5 = self.headers.get("Content-MD5")
        if content_md5:
            try:
                ok = base64.b64decode(content_md5) == bytes.fromhex(md5)
            except (ValueError, binascii.Error):
                ok = False
            if not ok:
                raise S3Error(
                    400,
                    "BadDigest",
                    "The Content-MD5 you specified did not match what we received.",
                )
        return size, md5

    def _user_metadata_from_headers(self) -> dict | None:
        md = {
            k.lower()[len("x-amz-meta-") :]: v
            for k, v in self.headers.items()
            if k.lower().startswith("x-amz-meta-")
        }
        return md or None

    @staticmethod
    def _meta_headers(row) -> dict:
        if not row["user_metadata"]:
            return {}
        md = json.loads(row["user_metadata"])
        if not isinstance(md, dict):
            return {}
        return {
            f"x-amz-meta-{k}": v
            for k, v in md.items()
            if isinstance(v, (str, int, float))
        }

    # -- S3 operations
    def _s3_list_buckets(self):
        buckets = "".join(
            "<Bucket>"
            + xml_el("Name", r["name"])
            + xml_el("CreationDate", r["created_at"])
            + "</Bucket>"
            for r in self.server.store.list_buckets()
        )
        self._send_xml(
            200,
            "ListAllMyBucketsResult",
            [
                "<Owner><ID>local</ID><DisplayName>local</DisplayName></Owner>",
                f"<Buckets>{buckets}</Buckets>",
            ],
        )

    def _s3_list_objects(self, bucket: str, *, v2: bool):
        store = self.server.store
        store.require_bucket(bucket)
        q = self.query
        prefix = q.get("prefix", "")
        delimiter = q.get("delimiter") or ""
        url_enc = q.get("encoding-type") == "url"
        try:
            max_keys = min(int(q.get("max-keys", "1000")), 1000)
        except ValueError as exc:
            raise S3Error(400, "InvalidArgument", "Invalid max-keys") from exc
        token = q.get("continuation-token") if v2 else None
        after = q.get("start-after", "") if v2 else q.get("marker", "")
        skip_prefix = None  # resume after a common prefix: skip everything under it
        if not v2 and delimiter and after.endswith(delimiter):
            skip_prefix = after
        if token:
            try:
                state = json.loads(base64.urlsafe_b64decode(token.encode()))
                after, skip_prefix = state["after"], state.get("cp")
            except (ValueError, KeyError, TypeError, binascii.Error) as exc:
                raise S3Error(
                    400,
                    "InvalidArgument",
                    "The continuation token provided is incorrect",
                ) from exc

        enc = (lambda s: urllib.parse.quote(s, safe="")) if url_enc else (lambda s: s)
        contents: list[str] = []
        prefixes: list[str] = []
        last = None  # (name or common prefix, is_common_prefix)
        truncated = False
        for row in store.list_objects(bucket, prefix):
            name = row["name"]
            if after and name <= after:
                continue
            if skip_prefix and name.startswith(skip_prefix):
                continue
            idx = name.find(delimiter, len(prefix)) if delimiter else -1
            cp = name[: idx + len(delimiter)] if idx >= 0 else None
            if cp is not None and last is not None and last == (cp, True):
                continue  # still inside the common prefix just emitted
            if len(contents) + len(prefixes) >= max_keys:
                truncated = True
                break
            if cp is not None:
                prefixes.append(cp)
                last = (cp, True)
                continue
            contents.append(
                "<Contents>"
                + xml_el("Key", enc(name))
                + xml_el("LastModified", row["updated_at"])
                + xml_el("ETag", row["etag"])
                + xml_el("Size", row["size"])
                + xml_el("StorageClass", "STANDARD")
                + "</Contents>"
            )
            last = (name, False)
        children = [
            xml_el("Name", bucket),
            xml_el("Prefix", enc(prefix)),
            xml_el("MaxKeys", max_keys),
        ]
        if delimiter:
            children.append(xml_el("Delimiter", enc(delimiter)))
        if url_enc:
            children.append(xml_el("EncodingType", "url"))
        children.append(xml_el("IsTruncated", truncated))
        if v2:
            children.append(xml_el("KeyCount", len(contents) + len(prefixes)))
            if token:
                children.append(xml_el("ContinuationToken", token))
            if q.get("start-after"):
                children.append(xml_el("StartAfter", enc(q["start-after"])))
            if truncated and last is not None:
                state = {"after": last[0], "cp": last[0] if last[1] else None}
                children.append(
                    xml_el(
                        "NextContinuationToken",
                        base64.urlsafe_b64encode(json.dumps(state).encode()).decode(),
                    )
                )
        else:
            children.append(xml_el("Marker", enc(q.get("marker", ""))))
            if truncated and last is not None and delimiter:
                children.append(xml_el("NextMarker", enc(last[0])))
        children += contents
        children += [
            "<CommonPrefixes>" + xml_el("Prefix", enc(p)) + "</CommonPrefixes>"
            for p in prefixes
        ]
        self._send_xml(200, "ListBucketResult", children)

    def _s3_list_uploads(self, bucket: str):
        store = self.server.store
        store.require_bucket(bucket)
        q = self.query
        prefix = q.get("prefix", "")
        url_enc = q.get("encoding-type") == "url"
        enc = (lambda s: urllib.parse.quote(s, safe="")) if url_enc else (lambda s: s)
        try:
            max_uploads = min(int(q.get("max-uploads", "1000")), 1000)
        except ValueError as exc:
            raise S3Error(400, "InvalidArgument", "Invalid max-uploads") from exc
        key_marker = q.get("key-marker", "")
        id_marker = q.get("upload-id-marker", "")
        rows = [
            r
            for r in store.list_uploads(bucket, prefix)
            if not key_marker or (r["key"], r["id"]) > (key_marker, id_marker)
        ]
        truncated = len(rows) > max_uploads
        rows = rows[:max_uploads]
        children = [
            xml_el("Bucket", bucket),
            xml_el("KeyMarker", enc(key_marker)),
            xml_el("UploadIdMarker", id_marker),
            xml_el("Prefix", enc(prefix)),
            xml_el("MaxUploads", max_uploads),
            xml_el("IsTruncated", truncated),
        ]
        if url_enc:
            children.append(xml_el("EncodingType", "url"))
        if truncated and rows:
            children += [
                xml_el("NextKeyMarker", enc(rows[-1]["key"])),
                xml_el("NextUploadIdMarker", rows[-1]["id"]),
            ]
        for r in rows:
            children.append(
                "<Upload>"
                + xml_el("Key", enc(r["key"]))
                + xml_el("UploadId", r["id"])
                + xml_el("Initiated", r["created_at"])
                + xml_el("StorageClass", "STANDARD")
                + "</Upload>"
            )
        self._send_xml(200, "ListMultipartUploadsResult", children)

    def _s3_create_upload(self, bucket: str, key: str):
        try:
            check_key(key)
        except StorageError as exc:
            raise to_s3_error(exc) from exc
        upload_id = self.server.store.create_upload(
            bucket,
            key,
            self.headers.get("Content-Type") or "application/octet-stream",
            self.headers.get("Cache-Control") or "no-cache",
            self._user_metadata_from_headers(),
        )
        self._send_xml(
            200,
            "InitiateMultipartUploadResult",
            [
                xml_el("Bucket", bucket),
                xml_el("Key", key),
                xml_el("UploadId", upload_id),
            ],
        )

    def _s3_upload_part(self, bucket: str, key: str, upload_id: str, part_number: str):
        srv = self.server
        store = srv.store
        try:
            number = int(part_number)
        except ValueError as exc:
            raise S3Error(
                400, "InvalidArgument", "Part number must be an integer"
            ) from exc
        if not 1 <= number <= 10000:
            raise S3Error(
                400,
                "InvalidArgument",
                "Part number must be an integer between 1 and 10000, inclusive",
            )
        store.get_upload(upload_id, bucket, key)
        bucket_row = store.require_bucket(bucket)
        limit = srv.bucket_limit(bucket_row, standard=False)
        used = store.parts_size(upload_id, exclude_part=number)
        tmp = store.tmp_path()
        try:
            size, md5 = self._s3_body_to_file(tmp, limit, used)
            etag = f'"{md5}"'
            store.commit_part(upload_id, number, tmp, size, etag)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._send_empty(200, {"ETag": etag})

    def _s3_complete_upload(self, bucket: str, key: str, upload_id: str):
        store = self.server.store
        upload = store.get_upload(upload_id, bucket, key)
        raw = bytearray()
        while True:
            data = self.body.read(CHUNK)
            if not data:
                break
            raw += data
            if len(raw) > MAX_JSON_BODY:
                raise S3Error(
                    400, "MalformedXML", "The XML you provided was not well-formed"
                )
        stored = {p["part_number"]: p for p in store.list_parts(upload_id)}
        wanted: list[tuple[int, str | None]] = []
        if raw.strip():
            try:
                root = ET.fromstring(bytes(raw))
            except ET.ParseError as exc:
                raise S3Error(
                    400,
                    "MalformedXML",
                    "The XML you provided was not well-formed or did not validate "
                    "against our published schema.",
                ) from exc
            for el in root:
                if strip_ns(el.tag) != "Part":
                    continue
                fields = {strip_ns(c.tag): (c.text or "").strip() for c in el}
                try:
                    wanted.append(
                        (int(fields.get("PartNumber", "")), fields.get("ETag"))
                    )
                except ValueError as exc:
                    raise S3Error(400, "MalformedXML", "Invalid PartNumber") from exc
        else:  # supabase: an empty part list means "all uploaded parts"
            wanted = [(n, None) for n in sorted(stored)]
        if not wanted:
            raise S3Error(
                400,
                "MalformedXML",
                "The XML you provided was not well-formed or did not validate "
                "against our published schema.",
            )
        numbers = [n for n, _ in wanted]
        if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
            raise S3Error(
                400,
                "InvalidPartOrder",
                "The list of parts was not in ascending order. The parts list must be "
                "specified in order by part number.",
            )
        for i, (n, etag) in enumerate(wanted):
            part = stored.get(n)
            if part is None or (
                etag is not None and etag.strip('"') != part["etag"].strip('"')
            ):
                raise S3Error(
                    400,
                    "InvalidPart",
                    "One or more of the specified parts could not be found. The part "
                    "may not have been uploaded, or the specified entity tag may not "
                    "match the part's entity tag.",
                )
            if i < len(wanted) - 1 and part["size"] < MIN_PART_SIZE:
                raise S3Error(
                    400,
                    "EntityTooSmall",
                    "Your proposed upload is smaller than the minimum allowed object "
                    "size.",
                )
        tmp = store.tmp_path()
        digest = hashlib.md5()
        total = 0
        try:
            with open(tmp, "wb") as out:
                for n, _ in wanted:
                    digest.update(bytes.fromhex(stored[n]["etag"].strip('"')))
                    with open(
                        os.path.join(store.upload_dir(upload_id), str(n)), "rb"
                    ) as src:
                        shutil.copyfileobj(src, out, CHUNK)
                    total += stored[n]["size"]
            etag = f'"{digest.hexdigest()}-{len(wanted)}"'
            store.commit_object(
                bucket,
                key,
                tmp,
                size=total,
                etag=etag,
                mimetype=upload["content_type"],
                cache_control=upload["cache_control"],
                user_metadata=json.loads(upload["user_metadata"])
                if upload["user_metadata"]
                else None,
                upsert=True,
            )
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        store.drop_upload(upload_id)
        self._send_xml(
            200,
            "CompleteMultipartUploadResult",
            [
                xml_el("Location", f"{bucket}/{key}"),
                xml_el("Bucket", bucket),
                xml_el("Key", key),
                xml_el("ETag", etag),
            ],
        )

    def _s3_abort_upload(self, bucket: str, key: str, upload_id: str):
        store = self.server.store
        store.get_upload(upload_id, bucket, key)
        store.drop_upload(upload_id)
        self._send_empty(204)

    def _s3_list_parts(self, bucket: str, key: str, upload_id: str):
        store = self.server.store
        store.get_upload(upload_id, bucket, key)
        q = self.query
        try:
            marker = int(q.get("part-number-marker", "0") or 0)
            max_parts = min(int(q.get("max-parts", "1000")), 1000)
        except ValueError as exc:
            raise S3Error(400, "InvalidArgument", "Invalid part-number-marker") from exc
        parts = [p for p in store.list_parts(upload_id) if p["part_number"] > marker]
        truncated = len(parts) > max_parts
        parts = parts[:max_parts]
        children = [
            xml_el("Bucket", bucket),
            xml_el("Key", key),
            xml_el("UploadId", upload_id),
            xml_el("PartNumberMarker", marker),
            xml_el("MaxParts", max_parts),
            xml_el("IsTruncated", truncated),
            xml_el("StorageClass", "STANDARD"),
        ]
        if truncated and parts:
            children.append(xml_el("NextPartNumberMarker", parts[-1]["part_number"]))
        for p in parts:
            children.append(
                "<Part>"
                + xml_el("PartNumber", p["part_number"])
                + xml_el("LastModified", p["created_at"])
                + xml_el("ETag", p["etag"])
                + xml_el("Size", p["size"])
                + "</Part>"
            )
        self._send_xml(200, "ListPartsResult", children)

    def _s3_put_object(self, bucket: str, key: str):
        srv = self.server
        store = srv.store
        try:
            check_key(key)
        except StorageError as exc:
            raise to_s3_error(exc) from exc
        bucket_row = store.require_bucket(bucket)
        tmp = store.tmp_path()
        try:
            size, md5 = self._s3_body_to_file(
                tmp, srv.bucket_limit(bucket_row, standard=False)
            )
            row = store.commit_object(
                bucket,
                key,
                tmp,
                size=size,
                etag=f'"{md5}"',
                mimetype=self.headers.get("Content-Type") or "application/octet-stream",
                cache_control=self.headers.get("Cache-Control") or "no-cache",
                user_metadata=self._user_metadata_from_headers(),
                upsert=True,
            )
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._send_empty(200, {"ETag": row["etag"]})

    def _s3_copy_object(self, bucket: str, key: str):
        source = urllib.parse.unquote(
            self.headers["x-amz-copy-source"].split("?", 1)[0]
        )
        src_bucket, _, src_key = source.lstrip("/").partition("/")
        if not src_bucket or not src_key:
            raise S3Error(400, "InvalidArgument", "Invalid copy source")
        row = self.server.store.copy_object(
            src_bucket, src_key, bucket, key, move=False, upsert=True
        )
        self._send_xml(
            200,
            "CopyObjectResult",
            [xml_el("ETag", row["etag"]), xml_el("LastModified", row["updated_at"])],
        )

    def _s3_delete_objects(self, bucket: str):
        store = self.server.store
        store.require_bucket(bucket)
        raw = bytearray()
        while True:
            data = self.body.read(CHUNK)
            if not data:
                break
            raw += data
        try:
            root = ET.fromstring(bytes(raw))
        except ET.ParseError as exc:
            raise S3Error(
                400, "MalformedXML", "The XML you provided was not well-formed"
            ) from exc
        keys, quiet = [], False
        for el in root:
            tag = strip_ns(el.tag)
            if tag == "Quiet":
                quiet = (el.text or "").strip().lower() == "true"
            elif tag == "Object":
                for c in el:
                    if strip_ns(c.tag) == "Key":
                        keys.append(c.text or "")
        store.delete_objects(bucket, keys)
        children = (
            []
            if quiet
            else [
                "<Deleted>" + xml_el("Key", k) + "</Deleted>"
                for k in dict.fromkeys(keys)
            ]
        )
        self._send_xml(200, "DeleteResult", children)

    def _s3_get_object(self, bucket: str, key: str):
        store = self.server.store
        store.require_bucket(bucket)
        row, fobj = store.open_object(bucket, key)
        if row is None:
            raise S3Error(404, "NoSuchKey", "Object not found")
        with fobj:
            self._serve_object(row, fobj, self._meta_headers(row), s3=True)


# --------------------------------------------------------------------------- entry points


def start_server(
    data_dir,
    service_key: str,
    jwt_secret: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    **options,
) -> tuple[StorageServer, str]:
    """Start a server in a background thread. Returns ``(server, base_url)``.

    ``base_url`` is what ``supabase.create_client`` takes; storage lives at
    ``base_url + "/storage/v1"`` and the S3 endpoint at ``base_url + "/storage/v1/s3"``.
    ``options`` are :class:`StorageServer` keyword arguments (``file_size_limit``,
    ``s3_access_key``, ``s3_secret_key``, ``s3_region``, ``anon_key``,
    ``require_apikey``, ``ssl_context``, ...).
    """
    server = StorageServer(
        (host, port),
        data_dir=str(data_dir),
        service_key=service_key,
        jwt_secret=jwt_secret,
        **options,
    )
    thread = threading.Thread(
        target=server.serve_forever,
        name="supabase-storage-local",
        kwargs={"poll_interval": 0.1},
        daemon=True,
    )
    thread.start()
    server._thread = thread  # type: ignore[attr-defined]
    return server, server.base_url


def stop(server: StorageServer) -> None:
    """Stop a server started with :func:`start_server` and release its resources."""
    server.shutdown()
    server.server_close()
    thread = getattr(server, "_thread", None)
    if thread is not None:
        thread.join(timeout=5)
    with server.store.lock:
        server.store.db.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--data-dir", required=True)
    p.add_argument(
        "--service-key", required=True, help="accepted as apikey and as Bearer token"
    )
    p.add_argument(
        "--jwt-secret", required=True, help="HS256 secret for JWTs and signed URLs"
    )
    p.add_argument("--anon-key", default=None, help="an extra accepted apikey")
    p.add_argument(
        "--file-size-limit",
        default=str(DEFAULT_FILE_SIZE_LIMIT),
        help="global upload limit: bytes, or 100MB / 1GB (decimal) / 50MiB (binary);"
        " default 52428800 (50 MiB, Supabase's default FILE_SIZE_LIMIT)",
    )
    p.add_argument(
        "--standard-upload-limit",
        default=None,
        help="extra cap for REST (standard) uploads only",
    )
    p.add_argument("--s3-access-key", default=None)
    p.add_argument("--s3-secret-key", default=None)
    p.add_argument("--s3-region", default="local")
    p.add_argument(
        "--no-require-apikey",
        action="store_true",
        help="don't require the apikey header (self-hosted Kong doesn't on storage)",
    )
    p.add_argument(
        "--no-verify-s3-signature",
        action="store_true",
        help="only check the access key id, not the SigV4 signature",
    )
    p.add_argument("--tls-cert", default=None)
    p.add_argument("--tls-key", default=None)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)

    ctx = None
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
    limit = parse_size(args.file_size_limit)
    server = StorageServer(
        (args.host, args.port),
        data_dir=args.data_dir,
        service_key=args.service_key,
        jwt_secret=args.jwt_secret,
        anon_key=args.anon_key,
        file_size_limit=limit if limit else None,
        standard_upload_limit=parse_size(args.standard_upload_limit),
        s3_access_key=args.s3_access_key,
        s3_secret_key=args.s3_secret_key,
        s3_region=args.s3_region,
        require_apikey=not args.no_require_apikey,
        verify_s3_signature=not args.no_verify_s3_signature,
        ssl_context=ctx,
        verbose=args.verbose,
    )

    def _terminate(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _terminate)
    print(f"READY {server.base_url}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
