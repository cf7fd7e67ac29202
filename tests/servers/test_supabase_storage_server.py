"""Tests for the local Supabase Storage server.

The REST side is driven with the real ``supabase`` client (storage3), the S3 side
with boto3, both against ``start_server(...)``; raw ``httpx`` requests check the
exact status codes and bodies where the clients would hide them.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import ipaddress
import json
import os
import random
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import boto3
import httpx
import jwt
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError
from storage3.exceptions import StorageApiError
from supabase import ClientOptions, create_client

from .supabase_storage import DEFAULT_FILE_SIZE_LIMIT, start_server, stop

MB = 1024 * 1024
JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
S3_ACCESS_KEY = "local-s3-access-key"
S3_SECRET_KEY = "local-s3-secret-key"
REPO_ROOT = Path(__file__).resolve().parents[2]


def service_key(secret: str = JWT_SECRET, *, ttl: int = 3600) -> str:
    now = int(time.time())
    claims = {"role": "service_role", "iss": "supabase", "iat": now, "exp": now + ttl}
    return jwt.encode(claims, secret, algorithm="HS256")


def launch(data_dir, **options):
    key = service_key()
    options.setdefault("s3_access_key", S3_ACCESS_KEY)
    options.setdefault("s3_secret_key", S3_SECRET_KEY)
    srv, url = start_server(data_dir, key, JWT_SECRET, **options)
    return SimpleNamespace(srv=srv, url=url, key=key, data_dir=Path(data_dir))


def s3_client(url: str, checksum: str = "when_supported", **kwargs):
    return boto3.client(
        "s3",
        endpoint_url=f"{url}/storage/v1/s3",
        region_name=kwargs.pop("region_name", "local"),
        aws_access_key_id=kwargs.pop("access_key", S3_ACCESS_KEY),
        aws_secret_access_key=kwargs.pop("secret_key", S3_SECRET_KEY),
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            request_checksum_calculation=checksum,
            response_checksum_validation=checksum,
            retries={"max_attempts": 1, "mode": "standard"},
        ),
        **kwargs,
    )


def s3_error(exc: ClientError) -> dict:
    """Code and Message of an S3 error: the stand-in's error XML is namespaced like storage-api's, so botocore
    leaves them empty under `Error` and puts them at the top of the response."""
    return {name: exc.response["Error"].get(name) or exc.response.get(name) for name in ("Code", "Message")}


def headers(key: str) -> dict:
    return {"apikey": key, "Authorization": f"Bearer {key}"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tmp_files(env) -> list[str]:
    return os.listdir(env.data_dir / "tmp")


class PatternStream(io.RawIOBase):
    """Non-seekable stream of deterministic pseudo-random bytes, made on the fly.

    The bytes don't depend on how the reader slices its reads.
    """

    BLOCK = 64 * 1024

    def __init__(self, size: int, seed: int):
        self.left = size
        self.rng = random.Random(seed)
        self.block = b""
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        want = min(len(buf), self.left)
        out = memoryview(buf)
        done = 0
        while done < want:
            if not self.block:
                self.block = self.rng.randbytes(self.BLOCK)
            n = min(want - done, len(self.block))
            out[done : done + n] = self.block[:n]
            self.digest.update(self.block[:n])
            self.block = self.block[n:]
            done += n
        self.left -= done
        return done


def pattern_bytes(size: int, seed: int) -> bytes:
    buf = bytearray(size)
    assert PatternStream(size, seed).readinto(buf) == size
    return bytes(buf)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = launch(tmp_path_factory.mktemp("storage-data"))
    yield e
    stop(e.srv)


@pytest.fixture(scope="module")
def client(env):
    return create_client(env.url, env.key)


def one_off_client(env):
    """A client for a request the server refuses: storage-api answers a refused upload without reading its body
    and then answers nothing more on that connection, so a shared client's pool would be left with a dead one."""
    return create_client(env.url, env.key)


@pytest.fixture
def bucket(client):
    name = f"t-{uuid.uuid4().hex[:12]}"
    client.storage.create_bucket(name)
    return name


@pytest.fixture(scope="module")
def tls_env(tmp_path_factory):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    e = launch(tmp_path_factory.mktemp("storage-tls-data"), ssl_context=ctx)
    e.cafile = str(d / "cert.pem")
    yield e
    stop(e.srv)


# --------------------------------------------------------------------------- buckets


def test_bucket_create_get_list_and_duplicate(env, client):
    assert client.storage.create_bucket("backups") == {"name": "backups"}
    got = client.storage.get_bucket("backups")
    assert (got.id, got.name, got.public, got.file_size_limit) == (
        "backups",
        "backups",
        False,
        None,
    )
    assert "backups" in [b.id for b in client.storage.list_buckets()]

    with pytest.raises(StorageApiError) as exc:
        client.storage.create_bucket("backups")
    assert (exc.value.status, exc.value.code) == ("409", "Duplicate")
    assert exc.value.message == "The resource already exists"

    raw = httpx.post(
        f"{env.url}/storage/v1/bucket",
        json={"name": "backups"},
        headers=headers(env.key),
    )
    assert raw.status_code == 400
    assert raw.json() == {
        "statusCode": "409",
        "code": "BucketAlreadyExists",
        "error": "Duplicate",
        "message": "The resource already exists",
    }

    with pytest.raises(StorageApiError) as exc:
        client.storage.get_bucket("no-such-bucket")
    assert (exc.value.status, exc.value.message) == ("404", "Bucket not found")


# --------------------------------------------------------------------------- objects


def test_upload_download_roundtrip_with_checksum(env, client, bucket):
    data = random.Random(1).randbytes(3 * MB + 17)
    store = client.storage.from_(bucket)
    res = store.upload(
        "tenant-1/2024-01-01.dump", data, {"content-type": "application/octet-stream"}
    )
    assert res.full_path == f"{bucket}/tenant-1/2024-01-01.dump"

    assert sha(store.download("tenant-1/2024-01-01.dump")) == sha(data)
    info = store.info("tenant-1/2024-01-01.dump")
    assert info["size"] == len(data)
    assert info["content_type"] == "application/octet-stream"
    assert info["etag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert info["cache_control"] == "max-age=3600"
    assert store.exists("tenant-1/2024-01-01.dump") is True
    assert store.exists("tenant-1/missing.dump") is False

    with pytest.raises(StorageApiError) as exc:
        store.download("tenant-1/missing.dump")
    assert (exc.value.status, exc.value.code, exc.value.message) == (
        "404",
        "not_found",
        "Object not found",
    )

    url = f"{env.url}/storage/v1/object/{bucket}/tenant-1/missing.dump"
    raw = httpx.get(url, headers=headers(env.key))
    assert raw.status_code == 400
    assert raw.json() == {
        "statusCode": "404",
        "code": "NoSuchKey",
        "error": "not_found",
        "message": "Object not found",
    }
    auth_url = (
        f"{env.url}/storage/v1/object/authenticated/{bucket}/tenant-1/2024-01-01.dump"
    )
    raw = httpx.get(auth_url, headers=headers(env.key))
    assert raw.status_code == 200 and sha(raw.content) == sha(data)
    assert raw.headers["content-length"] == str(len(data))
    assert raw.headers["etag"] == info["etag"]


def test_streamed_file_upload_over_default_limit_is_rejected(
    env, client, bucket, tmp_path
):
    store = client.storage.from_(bucket)
    ok = tmp_path / "ok.bin"
    with open(ok, "wb") as f:  # a path: storage3 streams it from disk
        f.write(random.Random(2).randbytes(20 * MB))
    store.upload("big/ok.bin", ok)
    assert store.info("big/ok.bin")["size"] == 20 * MB

    too_big = tmp_path / "too-big.bin"
    with open(too_big, "wb") as f:
        f.truncate(DEFAULT_FILE_SIZE_LIMIT + 1)
    with pytest.raises(StorageApiError) as exc:
        one_off_client(env).storage.from_(bucket).upload("big/too-big.bin", too_big)
    assert (exc.value.status, exc.value.code) == ("413", "Payload too large")
    assert exc.value.message == "The object exceeded the maximum allowed size"
    assert [e["name"] for e in store.list("big")] == ["ok.bin"]
    assert tmp_files(env) == []


def test_bucket_size_limit_raw_body(env, client):
    name = f"lim-{uuid.uuid4().hex[:8]}"
    client.storage.create_bucket(name, options={"file_size_limit": MB})
    url = f"{env.url}/storage/v1/object/{name}/raw.bin"
    h = {**headers(env.key), "Content-Type": "application/octet-stream"}
    raw = httpx.post(url, content=b"x" * (MB + 1), headers=h)
    assert raw.status_code == 400
    assert raw.json() == {
        "statusCode": "413",
        "code": "EntityTooLarge",
        "error": "Payload too large",
        "message": "The object exceeded the maximum allowed size",
    }
    assert client.storage.from_(name).exists("raw.bin") is False
    assert (
        httpx.post(url, content=b"x" * MB, headers=h).json()["Key"] == f"{name}/raw.bin"
    )
    assert client.storage.from_(name).info("raw.bin")["size"] == MB


def test_upsert_behaviour(env, client, bucket):
    store = client.storage.from_(bucket)
    store.upload("u/obj.txt", b"v1")
    first = store.info("u/obj.txt")

    with pytest.raises(StorageApiError) as exc:
        one_off_client(env).storage.from_(bucket).upload("u/obj.txt", b"v2")
    assert (exc.value.status, exc.value.code, exc.value.message) == (
        "409",
        "Duplicate",
        "The resource already exists",
    )
    assert store.download("u/obj.txt") == b"v1"

    store.upload("u/obj.txt", b"v2", {"upsert": "true"})
    assert store.download("u/obj.txt") == b"v2"
    store.update("u/obj.txt", b"v3")  # PUT: always overwrites
    assert store.download("u/obj.txt") == b"v3"
    store.update("u/new.txt", b"created by PUT")
    assert store.download("u/new.txt") == b"created by PUT"

    last = store.info("u/obj.txt")
    assert last["id"] == first["id"] and last["created_at"] == first["created_at"]
    assert last["version"] != first["version"] and last["size"] == 2


def test_list_prefix_folders_and_paging(client, bucket):
    store = client.storage.from_(bucket)
    opts = {"content-type": "application/octet-stream"}
    for i in range(1, 8):
        store.upload(f"tenant-a/2024/{i:02d}.dump", bytes([i]) * i, opts)
    store.upload("tenant-a/2024/sub/x.dump", b"x", opts)
    store.upload("tenant-a/2024/sub/y.dump", b"y", opts)
    store.upload("tenant-a/other.dump", b"o", opts)
    store.upload("tenant-b/z.dump", b"z", opts)

    pages = [
        store.list("tenant-a/2024", {"limit": 3, "offset": off}) for off in (0, 3, 6, 9)
    ]
    assert [[e["name"] for e in p] for p in pages] == [
        ["01.dump", "02.dump", "03.dump"],
        ["04.dump", "05.dump", "06.dump"],
        ["07.dump", "sub"],
        [],
    ]
    folder = pages[2][1]
    assert folder == {
        "name": "sub",
        "id": None,
        "updated_at": None,
        "created_at": None,
        "last_accessed_at": None,
        "metadata": None,
    }
    f = pages[0][1]
    assert f["id"] and f["created_at"] and f["updated_at"] and f["last_accessed_at"]
    assert f["metadata"] == {
        "eTag": f'"{hashlib.md5(bytes([2]) * 2).hexdigest()}"',
        "size": 2,
        "mimetype": "application/octet-stream",
        "cacheControl": "max-age=3600",
        "lastModified": f["updated_at"],
        "contentLength": 2,
        "httpStatusCode": 200,
    }

    assert [e["name"] for e in store.list("tenant-a")] == ["2024", "other.dump"]
    assert [(e["name"], e["id"]) for e in store.list()] == [
        ("tenant-a", None),
        ("tenant-b", None),
    ]
    assert [e["name"] for e in store.list("tenant-a/2024", {"search": "0"})] == [
        f"{i:02d}.dump" for i in range(1, 8)
    ]
    desc = store.list(
        "tenant-a/2024", {"limit": 2, "sortBy": {"column": "name", "order": "desc"}}
    )
    assert [e["name"] for e in desc] == ["sub", "07.dump"]
    by_time = store.list(
        "tenant-a/2024", {"sortBy": {"column": "created_at", "order": "asc"}}
    )
    assert by_time[0]["name"] == "sub" and by_time[1]["name"] == "01.dump"


def test_remove_by_prefixes(client, bucket):
    store = client.storage.from_(bucket)
    for name in ("a.txt", "b.txt", "c.txt"):
        store.upload(f"d/{name}", name.encode())
    deleted = store.remove(["d/a.txt", "d/b.txt", "d/missing.txt"])
    assert sorted(o["name"] for o in deleted) == ["d/a.txt", "d/b.txt"]
    assert all(o["bucket_id"] == bucket and o["metadata"]["size"] == 5 for o in deleted)
    assert [e["name"] for e in store.list("d")] == ["c.txt"]
    assert store.exists("d/a.txt") is False
    assert store.remove(["d/a.txt"]) == []


def test_move_and_copy(client, bucket):
    store = client.storage.from_(bucket)
    store.upload("m/src.txt", b"payload")
    assert store.copy("m/src.txt", "m/copy.txt")["Key"] == f"{bucket}/m/copy.txt"
    assert store.move("m/src.txt", "m/moved.txt") == {"message": "Successfully moved"}
    assert [e["name"] for e in store.list("m")] == ["copy.txt", "moved.txt"]
    assert store.download("m/moved.txt") == store.download("m/copy.txt") == b"payload"
    with pytest.raises(StorageApiError) as exc:
        store.move("m/copy.txt", "m/moved.txt")
    assert exc.value.status == "409"


# --------------------------------------------------------------------------- signed URLs


def test_signed_url_valid_expired_and_tampered(env, client, bucket):
    store = client.storage.from_(bucket)
    data = random.Random(3).randbytes(200_000)
    store.upload("reports/r 1.bin", data)
    store.upload("reports/other.bin", b"other")

    signed = store.create_signed_url("reports/r 1.bin", 60)["signedURL"]
    base = f"{env.url}/storage/v1/object/sign/{bucket}/reports/r%201.bin"
    assert signed.startswith(base + "?token=")
    token = httpx.URL(signed).params["token"]
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
    assert (
        claims["url"] == f"{bucket}/reports/r 1.bin"
        and claims["exp"] - claims["iat"] == 60
    )

    ok = httpx.get(signed)  # no apikey, no Authorization
    assert ok.status_code == 200 and ok.content == data
    assert ok.headers["content-length"] == str(len(data)) and "expires" in ok.headers

    now = int(time.time())
    expired = jwt.encode(
        {"url": claims["url"], "iat": now - 120, "exp": now - 60}, JWT_SECRET
    )
    r = httpx.get(base, params={"token": expired})
    assert r.status_code == 400
    assert r.json() == {
        "statusCode": "400",
        "code": "InvalidJWT",
        "error": "InvalidJWT",
        "message": '"exp" claim timestamp check failed',  # jose's JWTExpired
    }
    for malformed in ("garbage", "a.b", ""):  # jose's JWSInvalid (an empty token is one too)
        r = httpx.get(base, params={"token": malformed})
        if malformed:
            assert (r.status_code, r.json()["code"]) == (400, "InvalidJWT")
            assert r.json()["message"] == "Invalid Compact JWS"
        else:  # the route's query schema requires a token
            assert r.status_code == 400 and "token" in r.json()["message"]

    head, _, sig = token.split(".")
    forged_claims = dict(claims, url=f"{bucket}/reports/other.bin")
    forged_payload = base64.urlsafe_b64encode(
        json.dumps(forged_claims).encode()
    ).rstrip(b"=")
    tampered = f"{head}.{forged_payload.decode()}.{sig}"
    r = httpx.get(
        f"{env.url}/storage/v1/object/sign/{bucket}/reports/other.bin",
        params={"token": tampered},
    )
    assert r.status_code == 400 and r.json()["code"] == "InvalidJWT"
    assert r.json()["message"] == "signature verification failed"

    wrong_secret = jwt.encode(dict(claims), "another-secret-another-secret-another")
    r = httpx.get(base, params={"token": wrong_secret})
    assert (r.status_code, r.json()["message"]) == (400, "signature verification failed")

    upload_token = jwt.encode(dict(claims, scope="upload"), JWT_SECRET)  # not for downloads
    r = httpx.get(base, params={"token": upload_token})
    assert (r.status_code, r.json()["code"]) == (400, "InvalidSignature")

    # a valid token for one object doesn't open another
    r = httpx.get(
        f"{env.url}/storage/v1/object/sign/{bucket}/reports/other.bin",
        params={"token": token},
    )
    assert r.status_code == 400 and r.json()["code"] == "InvalidSignature"

    many = store.create_signed_urls(["reports/other.bin", "reports/nope.bin"], 30)
    assert httpx.get(many[0]["signedURL"]).content == b"other"
    assert many[1]["signedURL"] is None and many[1]["error"]


# --------------------------------------------------------------------------- auth


def test_wrong_or_missing_keys_are_rejected(env):
    url = f"{env.url}/storage/v1/bucket"
    with pytest.raises(StorageApiError) as exc:
        create_client(env.url, "not-the-service-key").storage.list_buckets()
    assert exc.value.status == 401

    r = httpx.get(url, headers={"apikey": "nope", "Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert r.json() == {
        "message": "Invalid API key",
        "hint": "Double check your Supabase `anon` or `service_role` API key.",
    }
    r = httpx.get(url, headers={"Authorization": f"Bearer {env.key}"})
    assert r.status_code == 401
    assert r.json() == {
        "message": "No API key found in request",
        "hint": "No `apikey` request header or url param was found.",
    }

    def denied(authorization):
        r = httpx.get(url, headers={"apikey": env.key, **authorization})
        assert r.status_code == 400
        body = r.json()
        assert (body["statusCode"], body["code"], body["error"]) == (
            "403",
            "AccessDenied",
            "Unauthorized",
        )
        return body["message"]

    assert denied(
        {
            "Authorization": f"Bearer {service_key('a-different-secret-a-different-secret')}"
        }
    ) == ("signature verification failed")
    assert (
        denied({"Authorization": f"Bearer {service_key(ttl=-10)}"})
        == '"exp" claim timestamp check failed'
    )
    assert denied({"Authorization": "Bearer garbage"}) == "Invalid Compact JWS"
    assert denied({}) == "Invalid Compact JWS"

    bad_bearer = create_client(
        env.url,
        env.key,
        ClientOptions(headers={"Authorization": f"Bearer {service_key('x' * 40)}"}),
    )
    with pytest.raises(StorageApiError) as exc:
        bad_bearer.storage.list_buckets()
    assert (exc.value.status, exc.value.code, exc.value.message) == (
        "403",
        "Unauthorized",
        "signature verification failed",
    )
    assert httpx.get(url, headers=headers(env.key)).status_code == 200


# --------------------------------------------------------------------------- S3 protocol


@pytest.mark.parametrize(
    ("transport", "checksum"),
    [
        ("http", "when_supported"),
        ("http", "when_required"),
        (
            "https",
            "when_supported",
        ),  # botocore sends aws-chunked bodies with CRC32 trailers
        ("https", "when_required"),
    ],
)
def test_s3_multipart_stream_then_rest(request, transport, checksum):
    e = request.getfixturevalue("env" if transport == "http" else "tls_env")
    verify = getattr(e, "cafile", True)
    http = httpx.Client(
        verify=ssl.create_default_context(cafile=verify)
        if transport == "https"
        else True
    )
    sb = create_client(e.url, e.key, ClientOptions(httpx_client=http))
    name = f"s3-{uuid.uuid4().hex[:10]}"
    sb.storage.create_bucket(name)
    s3 = s3_client(e.url, checksum, verify=verify)
    stats_before = dict(e.srv.stats)

    size = 20 * MB + 12345
    stream = PatternStream(size, seed=42)
    cfg = TransferConfig(
        multipart_threshold=5 * MB, multipart_chunksize=5 * MB, max_concurrency=3
    )
    s3.upload_fileobj(
        stream,
        name,
        "tenant-7/full.dump",
        Config=cfg,
        ExtraArgs={"ContentType": "application/gzip"},
    )

    head = s3.head_object(Bucket=name, Key="tenant-7/full.dump")
    assert head["ContentLength"] == size and head["ETag"].endswith(
        '-5"'
    )  # 4 x 5 MiB + tail
    assert head["ContentType"] == "application/gzip"

    listed = sb.storage.from_(name).list("tenant-7")
    assert [(x["name"], x["metadata"]["size"]) for x in listed] == [("full.dump", size)]
    assert listed[0]["metadata"]["eTag"] == head["ETag"]
    assert (
        sha(sb.storage.from_(name).download("tenant-7/full.dump"))
        == stream.digest.hexdigest()
    )

    part = s3.get_object(
        Bucket=name, Key="tenant-7/full.dump", Range="bytes=5242870-5242889"
    )
    assert part["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert part["ContentRange"] == f"bytes 5242870-5242889/{size}"
    expected = pattern_bytes(5242890, seed=42)[5242870:]
    assert part["Body"].read() == expected

    aws_chunked = e.srv.stats.get("aws_chunked_bodies_decoded", 0) - stats_before.get(
        "aws_chunked_bodies_decoded", 0
    )
    crc_checked = e.srv.stats.get("checksum_verified_crc32", 0) - stats_before.get(
        "checksum_verified_crc32", 0
    )
    if checksum == "when_supported":
        assert crc_checked >= 5  # every part carried a CRC32 the server verified
        assert (aws_chunked >= 5) == (transport == "https")
    else:
        assert (aws_chunked, crc_checked) == (0, 0)
    assert s3.list_multipart_uploads(Bucket=name).get("Uploads", []) == []
    http.close()


def test_s3_and_rest_share_objects(env, client, bucket):
    s3 = s3_client(env.url)
    store = client.storage.from_(bucket)
    store.upload("x/from-rest.txt", b"hello from rest", {"content-type": "text/plain"})
    got = s3.get_object(Bucket=bucket, Key="x/from-rest.txt")
    assert (
        got["Body"].read() == b"hello from rest" and got["ContentType"] == "text/plain"
    )

    s3.put_object(
        Bucket=bucket,
        Key="x/from-s3.txt",
        Body=b"hello from s3",
        ContentType="text/plain",
    )
    assert store.download("x/from-s3.txt") == b"hello from s3"
    assert (
        httpx.get(store.create_signed_url("x/from-s3.txt", 30)["signedURL"]).content
        == b"hello from s3"
    )

    for i in range(5):
        s3.put_object(Bucket=bucket, Key=f"x/p/{i}.bin", Body=b"p")
    page = s3.list_objects_v2(Bucket=bucket, Prefix="x/", Delimiter="/", MaxKeys=2)
    assert [c["Key"] for c in page["Contents"]] == ["x/from-rest.txt", "x/from-s3.txt"]
    assert page["IsTruncated"] is True and "CommonPrefixes" not in page
    page2 = s3.list_objects_v2(
        Bucket=bucket,
        Prefix="x/",
        Delimiter="/",
        MaxKeys=2,
        ContinuationToken=page["NextContinuationToken"],
    )
    assert (
        page2["CommonPrefixes"] == [{"Prefix": "x/p/"}]
        and page2["IsTruncated"] is False
    )
    paginator = s3.get_paginator("list_objects_v2")
    keys = [
        c["Key"]
        for pg in paginator.paginate(
            Bucket=bucket, Prefix="x/p/", PaginationConfig={"PageSize": 2}
        )
        for c in pg["Contents"]
    ]
    assert keys == [f"x/p/{i}.bin" for i in range(5)]

    s3.delete_object(Bucket=bucket, Key="x/from-rest.txt")
    assert store.exists("x/from-rest.txt") is False


def test_s3_abort_leaves_nothing(env, client, bucket):
    s3 = s3_client(env.url)
    mpu = s3.create_multipart_upload(Bucket=bucket, Key="pending/x.dump")
    upload_id = mpu["UploadId"]
    etag = s3.upload_part(
        Bucket=bucket,
        Key="pending/x.dump",
        UploadId=upload_id,
        PartNumber=1,
        Body=b"a" * 6 * MB,
    )["ETag"]
    s3.upload_part(
        Bucket=bucket,
        Key="pending/x.dump",
        UploadId=upload_id,
        PartNumber=2,
        Body=b"b" * 10,
    )

    uploads = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [
        ("pending/x.dump", upload_id)
    ]
    assert [
        p["PartNumber"]
        for p in s3.list_parts(Bucket=bucket, Key="pending/x.dump", UploadId=upload_id)[
            "Parts"
        ]
    ] == [1, 2]
    # an incomplete upload is never an object
    assert client.storage.from_(bucket).list("pending") == []
    assert s3.list_objects_v2(Bucket=bucket, Prefix="pending/")["KeyCount"] == 0
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="pending/x.dump")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert sorted(os.listdir(env.data_dir / "multipart" / upload_id)) == ["1", "2"]

    # parts smaller than 5 MiB (but the last) are refused, and the upload survives that
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key="pending/x.dump",
            UploadId=upload_id,
            MultipartUpload={
                "Parts": [
                    {"PartNumber": 2, "ETag": etag},
                    {"PartNumber": 1, "ETag": etag},
                ]
            },
        )
    assert s3_error(exc.value)["Code"] == "InvalidPartOrder"

    s3.abort_multipart_upload(Bucket=bucket, Key="pending/x.dump", UploadId=upload_id)
    assert not (env.data_dir / "multipart" / upload_id).exists()
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    for call in (
        lambda: s3.upload_part(
            Bucket=bucket,
            Key="pending/x.dump",
            UploadId=upload_id,
            PartNumber=3,
            Body=b"c",
        ),
        lambda: s3.complete_multipart_upload(
            Bucket=bucket,
            Key="pending/x.dump",
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
        ),
        lambda: s3.abort_multipart_upload(
            Bucket=bucket, Key="pending/x.dump", UploadId=upload_id
        ),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert s3_error(exc.value)["Code"] == "NoSuchUpload"
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert client.storage.from_(bucket).list("pending") == []
    assert tmp_files(env) == []


def test_s3_multipart_small_parts_and_errors(env, bucket):
    s3 = s3_client(env.url)
    key = "small/x.bin"
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = [
        {
            "PartNumber": n,
            "ETag": s3.upload_part(
                Bucket=bucket, Key=key, UploadId=uid, PartNumber=n, Body=b"s" * 100
            )["ETag"],
        }
        for n in (1, 2)
    ]
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": parts}
        )
    assert s3_error(exc.value)["Code"] == "EntityTooSmall"
    s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=uid)

    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="nope.bin")
    assert s3_error(exc.value)["Code"] == "NoSuchKey"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404

    with pytest.raises(ClientError) as exc:
        s3_client(env.url, access_key="wrong-key").list_objects_v2(Bucket=bucket)
    assert s3_error(exc.value)["Code"] == "AccessDenied"
    assert s3_error(exc.value)["Message"] == "Invalid Access Key"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

    with pytest.raises(ClientError) as exc:
        s3_client(env.url, secret_key="wrong-secret").put_object(
            Bucket=bucket, Key="k", Body=b"x"
        )
    assert s3_error(exc.value)["Code"] == "SignatureDoesNotMatch"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket="no-such-bucket", Key="k", Body=b"x")
    assert s3_error(exc.value)["Code"] == "NoSuchBucket"

    presigned = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=60
    )
    assert httpx.get(presigned).status_code == 404  # signature accepted, object missing
    assert httpx.get(presigned.replace("Signature=", "Signature=0")).status_code == 403

    # a checksum that doesn't match the body is refused and stores nothing
    with pytest.raises(ClientError) as exc:
        s3.put_object(
            Bucket=bucket, Key="bad.bin", Body=b"data", ChecksumCRC32="AAAAAA=="
        )
    assert s3_error(exc.value)["Code"] == "BadDigest"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="bad.bin")


def test_s3_size_limit(env, client):
    name = f"lim-{uuid.uuid4().hex[:8]}"
    client.storage.create_bucket(name, options={"file_size_limit": 6 * MB})
    s3 = s3_client(env.url)
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=name, Key="big.bin", Body=b"x" * (6 * MB + 1))
    assert s3_error(exc.value)["Code"] == "EntityTooLarge"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413

    uid = s3.create_multipart_upload(Bucket=name, Key="mp.bin")["UploadId"]
    s3.upload_part(
        Bucket=name, Key="mp.bin", UploadId=uid, PartNumber=1, Body=b"a" * 5 * MB
    )
    with pytest.raises(ClientError) as exc:  # the parts together may not pass the limit
        s3.upload_part(
            Bucket=name, Key="mp.bin", UploadId=uid, PartNumber=2, Body=b"b" * MB + b"!"
        )
    assert s3_error(exc.value)["Code"] == "EntityTooLarge"
    parts = s3.list_parts(Bucket=name, Key="mp.bin", UploadId=uid)["Parts"]
    assert [p["PartNumber"] for p in parts] == [1]
    s3.abort_multipart_upload(Bucket=name, Key="mp.bin", UploadId=uid)
    assert client.storage.from_(name).list() == []
    assert tmp_files(env) == []


def test_s3_signing_region_must_be_one_the_server_accepts(tmp_path):
    """storage's getSelectedRegion: `auto`, `us-east-1` or its own region sign; any other gets
    403 SignatureDoesNotMatch, because the server computes the scope with its own region."""
    e = launch(tmp_path / "data", s3_region="eu-central-1")
    try:
        create_client(e.url, e.key).storage.create_bucket("regions")
        for region in ("auto", "us-east-1", "eu-central-1"):
            s3 = s3_client(e.url, region_name=region)
            s3.put_object(Bucket="regions", Key=f"{region}.bin", Body=b"x")
            assert s3.get_object(Bucket="regions", Key=f"{region}.bin")["Body"].read() == b"x"
        for region in ("eu-west-3", "local"):
            with pytest.raises(ClientError) as exc:
                s3_client(e.url, region_name=region).list_objects_v2(Bucket="regions")
            assert s3_error(exc.value)["Code"] == "SignatureDoesNotMatch"
            assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        presigned = s3_client(e.url, region_name="eu-west-3").generate_presigned_url(
            "get_object", Params={"Bucket": "regions", "Key": "auto.bin"}, ExpiresIn=60
        )
        assert httpx.get(presigned).status_code == 403
    finally:
        stop(e.srv)


def test_bearer_request_on_the_s3_path_is_missing_a_signature(env, bucket):
    """extractSignature: only SigV4 counts on /storage/v1/s3; a REST-style request there is an
    XML 403 AccessDenied "Missing signature", never a JSON body."""
    url = f"{env.url}/storage/v1/s3/storage/v1/bucket/{bucket}"
    r = httpx.get(url, headers=headers(env.key))
    assert r.status_code == 403 and r.headers["content-type"] == "application/xml"
    error = ET.fromstring(r.content)
    ns = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}
    assert (error.findtext("s3:Code", namespaces=ns), error.findtext("s3:Message", namespaces=ns)) == (
        "AccessDenied",
        "Missing signature",
    )
    r = httpx.post(f"{env.url}/storage/v1/s3/{bucket}/a.bin", headers=headers(env.key))
    assert r.status_code == 403 and b"Missing signature" in r.content


@pytest.mark.parametrize(
    "name",
    ["caf\u00e9.bin", "emoji-\U0001f600.bin", "a%20b.bin"]
    + [f"a{c}b.bin" for c in '#[]~{}"^|<>`\\'],
)
def test_keys_outside_the_s3_safe_set_are_invalid(env, client, bucket, name):
    """src/storage/limits.ts: 400 InvalidKey on upload (REST and S3), info, download and sign."""
    key = f"k/{name}"
    quoted = urllib.parse.quote(key, safe="/")
    h = {**headers(env.key), "Content-Type": "application/octet-stream"}
    invalid = {
        "statusCode": "400",
        "code": "InvalidKey",
        "error": "InvalidKey",
        "message": f"Invalid key: {key}",
    }
    base = f"{env.url}/storage/v1/object"
    assert httpx.post(f"{base}/{bucket}/{quoted}", content=b"x", headers=h).json() == invalid
    assert httpx.get(f"{base}/info/{bucket}/{quoted}", headers=h).json() == invalid
    assert httpx.get(f"{base}/{bucket}/{quoted}", headers=h).json() == invalid
    signed = httpx.post(f"{base}/sign/{bucket}/{quoted}", json={"expiresIn": 60}, headers=h)
    assert signed.json() == invalid
    with pytest.raises(ClientError) as exc:
        s3_client(env.url).put_object(Bucket=bucket, Key=key, Body=b"x")
    assert s3_error(exc.value)["Code"] == "InvalidKey"
    assert client.storage.from_(bucket).list("k") == []


def test_question_mark_is_stored_but_cuts_the_signed_link(env, client, bucket):
    """`?` is in storage's key set, but the signed URL it returns is not encoded
    (`/object/sign/<bucket>/<key>?token=`), so the link's path ends at the `?`."""
    h = {**headers(env.key), "Content-Type": "application/octet-stream"}
    url = f"{env.url}/storage/v1/object/{bucket}/q/a%3Fb.bin"
    assert httpx.post(url, content=b"x", headers=h).status_code == 200
    assert client.storage.from_(bucket).info("q/a?b.bin")["size"] == 1
    signed = client.storage.from_(bucket).create_signed_url("q/a?b.bin", 60)["signedURL"]
    assert "/q/a?b.bin?token=" in signed
    assert httpx.get(signed).status_code == 400  # asks for /q/a with a mangled query


def test_chunked_upload_passes_whatever_its_size(env, client):
    """uploader.ts checks a raw body's size only through its Content-Length: a chunked body
    over the bucket's limit is stored, one with a Content-Length over it is refused."""
    name = f"lim-{uuid.uuid4().hex[:8]}"
    client.storage.create_bucket(name, options={"file_size_limit": MB})
    url = f"{env.url}/storage/v1/object/{name}/chunked.bin"
    h = {**headers(env.key), "Content-Type": "application/octet-stream"}
    data = random.Random(9).randbytes(3 * MB)
    parts = (data[i : i + 256 * 1024] for i in range(0, len(data), 256 * 1024))
    r = httpx.post(url, content=parts, headers=h)
    assert r.status_code == 200, r.text
    assert client.storage.from_(name).info("chunked.bin")["size"] == 3 * MB
    fetched = httpx.get(url, headers=headers(env.key))
    assert sha(fetched.content) == sha(data)

    r = httpx.post(f"{env.url}/storage/v1/object/{name}/sized.bin", content=data, headers=h)
    assert r.status_code == 400 and r.json()["statusCode"] == "413"
    assert client.storage.from_(name).exists("sized.bin") is False


# --------------------------------------------------------------------------- robustness


def test_interrupted_upload_leaves_nothing(tmp_path):
    e = launch(tmp_path / "data")
    try:
        sb = create_client(e.url, e.key)
        sb.storage.create_bucket("backups")
        host, port = e.srv.server_address[:2]
        with socket.create_connection((host, port)) as sock:
            sock.sendall(
                (
                    f"POST /storage/v1/object/backups/cut.bin HTTP/1.1\r\nHost: {host}:{port}\r\n"
                    f"apikey: {e.key}\r\nAuthorization: Bearer {e.key}\r\n"
                    f"Content-Type: application/octet-stream\r\nContent-Length: {4 * MB}\r\n\r\n"
                ).encode()
                + b"z" * MB
            )
        deadline = time.time() + 5
        while not e.srv.stats.get("incomplete_bodies") and time.time() < deadline:
            time.sleep(0.02)
        assert e.srv.stats.get("incomplete_bodies") == 1
        assert tmp_files(e) == []
        assert sb.storage.from_("backups").exists("cut.bin") is False
        assert sb.storage.from_("backups").list() == []
        assert os.listdir(e.data_dir / "objects") == []
    finally:
        stop(e.srv)


def test_concurrent_uploads(tmp_path):
    e = launch(tmp_path / "data")
    try:
        sb = create_client(e.url, e.key)
        sb.storage.create_bucket("backups")
        store = sb.storage.from_("backups")
        errors = []

        def work(i):
            try:
                c = sb.storage.from_("backups")  # one httpx pool, many connections
                c.upload(f"many/{i}.bin", bytes([i]) * (100_000 + i))
                c.upload("same.bin", bytes([i]) * 50_000, {"upsert": "true"})
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        listed = store.list("many", {"limit": 100})
        assert sorted(x["name"] for x in listed) == sorted(
            f"{i}.bin" for i in range(12)
        )
        assert all(
            x["metadata"]["size"] == 100_000 + int(x["name"].split(".")[0])
            for x in listed
        )
        same = store.download("same.bin")
        assert len(same) == 50_000 and same == same[:1] * 50_000
        assert len(os.listdir(e.data_dir / "objects")) == 13  # no orphaned versions
        assert tmp_files(e) == []
    finally:
        stop(e.srv)


def test_cli_prints_ready_and_serves(tmp_path):
    key = service_key()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.servers.supabase_storage",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path / "data"),
            "--service-key",
            key,
            "--jwt-secret",
            JWT_SECRET,
            "--file-size-limit",
            "1MiB",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        assert ready, "server did not start"
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:")
        url = line.split()[1]
        sb = create_client(url, key)
        sb.storage.create_bucket("cli")
        sb.storage.from_("cli").upload("a.txt", b"hi")
        assert sb.storage.from_("cli").download("a.txt") == b"hi"
        with pytest.raises(StorageApiError) as exc:
            sb.storage.from_("cli").upload("big.bin", b"x" * (MB + 1))
        assert exc.value.status == "413"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()


# --------------------------------------------------------------------------- as the real storage-api answers


def test_s3_errors_are_namespaced_like_storage_apis(env, bucket):
    """storage-api's S3 error document carries the S3 namespace: botocore then leaves Error.Code empty."""
    import xml.etree.ElementTree as ET

    with pytest.raises(ClientError) as exc:
        s3_client(env.url, secret_key="wrong").list_objects_v2(Bucket=bucket)
    assert exc.value.response["Error"]["Code"] == ""
    assert exc.value.response["Code"] == "SignatureDoesNotMatch"
    raw = httpx.get(f"{env.url}/storage/v1/s3/{bucket}", headers={"Authorization": "Bearer x"})
    assert ET.fromstring(raw.content).tag == "{http://s3.amazonaws.com/doc/2006-03-01/}Error"


def test_a_refused_upload_is_answered_unread_and_nothing_more_on_its_connection(env, client, bucket):
    client.storage.from_(bucket).upload("held/a.bin", b"v1")
    h = {**headers(env.key), "Content-Type": "application/octet-stream"}
    url = f"{env.url}/storage/v1/object/{bucket}/held/a.bin"
    before = env.srv.stats.get("held_connections", 0)
    with httpx.Client(timeout=httpx.Timeout(1.0)) as http:
        refused = http.post(url, content=(b"x" * MB for _ in range(4)), headers=h)
        assert refused.json()["statusCode"] == "409"
        with pytest.raises(httpx.ReadTimeout):
            http.get(f"{env.url}/storage/v1/bucket/{bucket}", headers=headers(env.key))
    with httpx.Client(timeout=httpx.Timeout(5.0)) as http:  # Connection: close: the next request is answered
        refused = http.post(url, content=b"x" * MB, headers={**h, "Connection": "close"})
        assert refused.json()["statusCode"] == "409"
        assert http.get(f"{env.url}/storage/v1/bucket/{bucket}", headers=headers(env.key)).status_code == 200
    assert env.srv.stats["held_connections"] == before + 2


def test_the_anon_key_sees_no_bucket_and_creates_none(env, bucket):
    anon = jwt.encode({"role": "anon", "iss": "supabase", "exp": int(time.time()) + 600}, JWT_SECRET,
                      algorithm="HS256")
    h = {"apikey": env.key, "Authorization": f"Bearer {anon}"}  # the gateway checks only the apikey
    assert httpx.get(f"{env.url}/storage/v1/bucket", headers=h).json() == []
    missing = httpx.get(f"{env.url}/storage/v1/bucket/{bucket}", headers=h).json()
    assert (missing["statusCode"], missing["error"]) == ("404", "Bucket not found")
    created = httpx.post(f"{env.url}/storage/v1/bucket", headers=h, json={"name": "anon-made"})
    assert created.status_code == 400 and created.json() == {
        "statusCode": "403", "code": "AccessDenied", "error": "Unauthorized",
        "message": "new row violates row-level security policy",
    }
