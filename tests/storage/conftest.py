"""Storage fixtures: the session's S3 server (radosgw, tests/servers/radosgw.py) with a fresh bucket per test,
one Supabase stand-in per session, and the `backend` / `storage` pair every conformance test runs on.

To add a backend (e.g. `supabase`), write a factory `make_<name>(request) -> Backend` and add it to BACKENDS:
every test in test_conformance.py then runs against it too.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from backups.storage.base import Storage
from backups.storage.local import PARTIAL_PREFIX, LocalStorage
from backups.storage.s3 import MiB, S3Storage
from backups.storage.supabase import SupabaseStorage
from tests.servers.radosgw import S3TestServer
from tests.servers.supabase_storage import StorageServer, start_server, stop

TEST_BUCKET = "tenant-backups-test"  # a name for storages that never reach a server
TEST_REGION = "us-east-1"
TEST_PART_SIZE = 5 * MiB  # S3's minimum: a 12 MB upload already takes three parts


@dataclass
class Backend:
    """A storage under test, plus what the suite needs to look behind it."""

    name: str
    storage: Storage
    pending_uploads: Callable[[], list[str]]  # uploads started but neither committed nor aborted
    list_calls: Callable[[], int] = lambda: 0  # how many listing requests went out (pagination checks)


def make_s3_storage(server: S3TestServer, **overrides) -> S3Storage:
    """An S3Storage on the test server with its throwaway keys, small parts, no SSE header, quick to give up."""
    kwargs = {
        "bucket": TEST_BUCKET,
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
        "region_name": server.region,
        "endpoint_url": server.endpoint_url,
        "part_size": TEST_PART_SIZE,
        "max_attempts": 2,
        "connect_timeout": 5,
        "read_timeout": 30,
    }
    kwargs.update(overrides)
    return S3Storage(**kwargs)


@pytest.fixture
def s3_bucket(s3_server: S3TestServer) -> Iterator[str]:
    """A new, empty bucket for this test, removed with everything in it afterwards."""
    name = s3_server.create_bucket(new_bucket_name())
    yield name
    s3_server.delete_bucket(name)


@pytest.fixture
def s3_storage(s3_server: S3TestServer, s3_bucket: str) -> S3Storage:
    return make_s3_storage(s3_server, bucket=s3_bucket)


def s3_pending_uploads(storage: S3Storage) -> list[str]:
    pages = storage.client.get_paginator("list_multipart_uploads").paginate(Bucket=storage.bucket)
    return [upload["Key"] for page in pages for upload in page.get("Uploads", ())]


def make_local(request: pytest.FixtureRequest) -> Backend:
    root: Path = request.getfixturevalue("tmp_path") / "backups"
    storage = LocalStorage(root, public_url="http://testserver")

    def pending() -> list[str]:
        if not root.exists():
            return []
        return sorted(
            os.path.relpath(os.path.join(dirpath, name), root)
            for dirpath, _, names in os.walk(root) for name in names if name.startswith(PARTIAL_PREFIX)
        )

    return Backend("local", storage, pending)


def make_s3(request: pytest.FixtureRequest) -> Backend:
    bucket = request.getfixturevalue("s3_bucket")
    storage = make_s3_storage(request.getfixturevalue("s3_server"), bucket=bucket)
    calls = {"ListObjectsV2": 0}

    def count(**_):
        calls["ListObjectsV2"] += 1

    storage.client.meta.events.register("before-call.s3.ListObjectsV2", count)
    return Backend("s3", storage, lambda: s3_pending_uploads(storage), lambda: calls["ListObjectsV2"])


# -- Supabase ----------------------------------------------------------------------------------------

SUPABASE_SERVICE_KEY = "sb_secret_test-service-role-key"  # an opaque service key; the stand-in accepts it as Bearer
SUPABASE_JWT_SECRET = "test-jwt-secret-with-at-least-32-characters"
SUPABASE_S3_ACCESS_KEY = "test-s3-access-key-id"
SUPABASE_S3_SECRET_KEY = "test-s3-secret-access-key"
# Real projects raise Supabase's 50 MiB default (the S3 endpoint shares it); the 100 MiB round trip needs more.
SUPABASE_FILE_SIZE_LIMIT = 1024 * MiB


@dataclass
class SupabaseServer:
    """The stand-in (tests/servers/supabase_storage.py) running in this process."""

    server: StorageServer
    url: str
    data_dir: Path

    @property
    def s3_endpoint(self) -> str:
        return f"{self.url}/storage/v1/s3"


def start_supabase(data_dir: Path, **options) -> SupabaseServer:
    """Start a stand-in with the test keys; `options` go to StorageServer (file_size_limit, ...)."""
    options.setdefault("s3_access_key", SUPABASE_S3_ACCESS_KEY)
    options.setdefault("s3_secret_key", SUPABASE_S3_SECRET_KEY)
    server, url = start_server(data_dir, SUPABASE_SERVICE_KEY, SUPABASE_JWT_SECRET, **options)
    return SupabaseServer(server, url, Path(data_dir))


@pytest.fixture(scope="session")
def supabase_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SupabaseServer]:
    """One Supabase Storage stand-in (REST + S3) for the session, with a 1 GiB file size limit."""
    server = start_supabase(tmp_path_factory.mktemp("supabase"), file_size_limit=SUPABASE_FILE_SIZE_LIMIT)
    yield server
    stop(server.server)


def new_bucket_name() -> str:
    """A bucket of its own for each test: nothing carries over, and nothing needs emptying."""
    return f"backups-{uuid.uuid4().hex[:12]}"


def make_supabase_storage(server: SupabaseServer, *, s3: bool = True, **overrides) -> SupabaseStorage:
    """A SupabaseStorage on the stand-in: with its S3 credentials unless s3=False, small parts, quick to give up."""
    kwargs = {
        "url": server.url,
        "key": SUPABASE_SERVICE_KEY,
        "bucket": new_bucket_name(),
        "part_size": TEST_PART_SIZE,
        "max_attempts": 2,
        "connect_timeout": 5,
        "read_timeout": 30,
    }
    if s3:
        kwargs.update(
            s3_endpoint=server.s3_endpoint,
            s3_region=TEST_REGION,
            s3_access_key_id=SUPABASE_S3_ACCESS_KEY,
            s3_secret_access_key=SUPABASE_S3_SECRET_KEY,
        )
    kwargs.update(overrides)
    return SupabaseStorage(**kwargs)


def count_list_requests(storage: SupabaseStorage) -> Callable[[], int]:
    """Count the REST listing requests (`POST /storage/v1/object/list/<bucket>`) the storage sends."""
    calls = {"list": 0}

    def count(request) -> None:
        if request.method == "POST" and "/storage/v1/object/list/" in request.url.path:
            calls["list"] += 1

    storage.http.event_hooks["request"].append(count)
    return lambda: calls["list"]


def make_supabase(request: pytest.FixtureRequest) -> Backend:
    server: SupabaseServer = request.getfixturevalue("supabase_server")
    storage = make_supabase_storage(server, list_page_size=500)  # 1,100 keys take three pages
    storage.check()  # creates the test's bucket
    list_calls = count_list_requests(storage)
    return Backend("supabase", storage, lambda: s3_pending_uploads(storage.s3), list_calls)


# The hook: one factory per backend. A `supabase` entry (its stand-in server is tests/servers/supabase_storage.py)
# makes the whole conformance suite run on it.
BACKENDS: dict[str, Callable[[pytest.FixtureRequest], Backend]] = {
    "local": make_local,
    "s3": make_s3,
    "supabase": make_supabase,
}


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Backend:
    return BACKENDS[request.param](request)


@pytest.fixture
def storage(backend: Backend) -> Storage:
    return backend.storage
