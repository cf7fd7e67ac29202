"""Storage fixtures: one moto S3 server per session, and the `backend` / `storage` pair every conformance test runs on.

To add a backend (e.g. `supabase`), write a factory `make_<name>(request) -> Backend` and add it to BACKENDS:
every test in test_conformance.py then runs against it too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from backups.storage.base import Storage
from backups.storage.local import PARTIAL_PREFIX, LocalStorage
from backups.storage.s3 import MiB, S3Storage
from tests.servers.moto_s3 import MotoS3Server

TEST_BUCKET = "tenant-backups-test"
TEST_REGION = "us-east-1"
TEST_PART_SIZE = 5 * MiB  # S3's minimum: a 12 MB upload already takes three parts


@dataclass
class Backend:
    """A storage under test, plus what the suite needs to look behind it."""

    name: str
    storage: Storage
    pending_uploads: Callable[[], list[str]]  # uploads started but neither committed nor aborted
    list_calls: Callable[[], int] = lambda: 0  # how many listing requests went out (pagination checks)


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3Server]:
    """moto's S3 server on a loopback port for the whole session. Never skipped: failing to start fails."""
    try:
        server = MotoS3Server.start()
    except (RuntimeError, OSError) as exc:
        pytest.fail(f"Could not start the moto S3 server (`python -m moto.server`; is moto[server] installed?): {exc}")
    yield server
    server.stop()


def make_s3_storage(endpoint_url: str, **overrides) -> S3Storage:
    """An S3Storage on the test server, small parts, fake credentials, quick to give up."""
    kwargs = {
        "bucket": TEST_BUCKET,
        "access_key_id": "testing",
        "secret_access_key": "testing",
        "region_name": TEST_REGION,
        "endpoint_url": endpoint_url,
        "part_size": TEST_PART_SIZE,
        "max_attempts": 2,
        "connect_timeout": 5,
        "read_timeout": 30,
    }
    kwargs.update(overrides)
    return S3Storage(**kwargs)


@pytest.fixture
def s3_bucket(moto_s3: MotoS3Server) -> str:
    """An empty server with the test bucket created (reset before each test)."""
    moto_s3.reset()
    make_s3_storage(moto_s3.endpoint_url).client.create_bucket(Bucket=TEST_BUCKET)
    return TEST_BUCKET


@pytest.fixture
def s3_storage(moto_s3: MotoS3Server, s3_bucket: str) -> S3Storage:
    return make_s3_storage(moto_s3.endpoint_url)


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
    request.getfixturevalue("s3_bucket")
    storage = make_s3_storage(request.getfixturevalue("moto_s3").endpoint_url)
    calls = {"ListObjectsV2": 0}

    def count(**_):
        calls["ListObjectsV2"] += 1

    storage.client.meta.events.register("before-call.s3.ListObjectsV2", count)
    return Backend("s3", storage, lambda: s3_pending_uploads(storage), lambda: calls["ListObjectsV2"])


# The hook: one factory per backend. A `supabase` entry (its stand-in server is tests/servers/supabase_storage.py)
# makes the whole conformance suite run on it.
BACKENDS: dict[str, Callable[[pytest.FixtureRequest], Backend]] = {
    "local": make_local,
    "s3": make_s3,
}


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Backend:
    return BACKENDS[request.param](request)


@pytest.fixture
def storage(backend: Backend) -> Storage:
    return backend.storage
