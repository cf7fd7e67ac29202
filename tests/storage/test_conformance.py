"""One behaviour, every backend: each test runs on every entry of conftest.BACKENDS (local, s3, ...)."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.core import signing

from backups.core.naming import InvalidKey, check_tenant_key
from backups.storage.base import ObjectNotFound, StorageError
from backups.storage.local import LocalStorage, resolve_signed_key

from .conftest import Backend

MiB = 1024 * 1024


def stream_chunks(total: int, chunk: int = MiB):
    """Cheap pseudo-random data: one random 1 MiB block, each chunk stamped with its index (no two alike)."""
    block = os.urandom(chunk)
    sent = 0
    index = 0
    while sent < total:
        size = min(chunk, total - sent)
        data = (index.to_bytes(8, "big") + block[8:])[:size]
        yield data
        sent += size
        index += 1


def write_stream(storage, key: str, total: int) -> str:
    """Upload `total` bytes in 1 MiB writes; the SHA-256 of what was sent."""
    digest = hashlib.sha256()
    with storage.open_write(key) as writer:
        for data in stream_chunks(total):
            digest.update(data)
            writer.write(data)
        writer.commit()
    return digest.hexdigest()


def read_stream(storage, key: str) -> tuple[str, int]:
    """Read back in 1 MiB reads: (SHA-256, size)."""
    digest = hashlib.sha256()
    size = 0
    with storage.open_read(key) as stream:
        while data := stream.read(MiB):
            assert len(data) <= MiB
            digest.update(data)
            size += len(data)
    return digest.hexdigest(), size


def test_round_trip_100_mb_stream(storage):
    total = 100 * MiB
    sent = write_stream(storage, "clinic1/big.sql.zst", total)

    received, size = read_stream(storage, "clinic1/big.sql.zst")

    assert (received, size) == (sent, total)
    assert storage.stat("clinic1/big.sql.zst").size == total


def test_list_keeps_tenants_with_shared_name_prefix_apart(storage):
    for key in ("clinic1/a.sql", "clinic1/b.sql", "clinic10/a.sql", "clinic2/a.sql"):
        storage.put_bytes(key, key.encode())

    listed = sorted(obj.key for obj in storage.list("clinic1/"))

    assert listed == ["clinic1/a.sql", "clinic1/b.sql"]
    assert sorted(obj.key for obj in storage.list("clinic10/")) == ["clinic10/a.sql"]
    sizes = {obj.key: obj.size for obj in storage.list("clinic1/")}
    assert sizes == {"clinic1/a.sql": len(b"clinic1/a.sql"), "clinic1/b.sql": len(b"clinic1/b.sql")}


def test_list_returns_every_page(backend: Backend):
    storage = backend.storage
    keys = [f"clinic1/auto-{i:04d}.json" for i in range(1100)]  # S3 (and moto) return 1,000 keys a page
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda key: storage.put_bytes(key, b"{}"), keys))
    storage.put_bytes("clinic10/other.json", b"{}")

    listed = [obj.key for obj in storage.list("clinic1/")]

    assert sorted(listed) == keys
    if backend.name == "s3":
        assert backend.list_calls() >= 2, "the listing should have needed more than one page"


def test_delete_and_missing_keys(storage):
    storage.put_bytes("clinic1/gone.sql", b"data")
    assert storage.stat("clinic1/gone.sql") is not None

    storage.delete("clinic1/gone.sql")

    assert storage.stat("clinic1/gone.sql") is None
    assert list(storage.list("clinic1/")) == []
    storage.delete("clinic1/gone.sql")  # deleting a missing key is not an error
    storage.delete("clinic1/never-was.sql")
    assert storage.stat("clinic1/never-was.sql") is None
    with pytest.raises(ObjectNotFound):
        storage.open_read("clinic1/never-was.sql")


def test_time_limited_url(backend: Backend):
    storage = backend.storage
    storage.put_bytes("clinic1/link.sql", b"the backup bytes")

    if backend.name == "local":
        # The HTTP fetch of a local link needs the local-download view, which does not exist yet: that part is
        # covered with the API issue. Here: the signed token round-trips and refuses expired or tampered tokens.
        token = storage.url("clinic1/link.sql", 60).rstrip("/").rsplit("/", 1)[-1]
        assert resolve_signed_key(token) == "clinic1/link.sql"
        expired = storage.url("clinic1/link.sql", -5).rstrip("/").rsplit("/", 1)[-1]
        with pytest.raises(signing.BadSignature):
            resolve_signed_key(expired)
        tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        with pytest.raises(signing.BadSignature):
            resolve_signed_key(tampered)
        return

    response = requests.get(storage.url("clinic1/link.sql", 60), timeout=10)
    assert response.status_code == 200
    assert response.content == b"the backup bytes"
    for bad in (0, -1, 604801, 10**9):
        with pytest.raises(ValueError, match="expires_in"):
            storage.url("clinic1/link.sql", bad)
    assert storage.url("clinic1/link.sql", 604800)  # seven days is the longest S3 allows


def test_abort_leaves_nothing(backend: Backend):
    storage = backend.storage
    writer = storage.open_write("clinic1/failed.sql")
    for data in stream_chunks(12 * MiB):
        writer.write(data)

    writer.abort()
    writer.abort()  # twice is fine

    assert list(storage.list("clinic1/")) == []
    assert storage.stat("clinic1/failed.sql") is None
    assert backend.pending_uploads() == []


def test_exception_inside_with_block_aborts(backend: Backend):
    storage = backend.storage
    with pytest.raises(RuntimeError, match="pg_dump died"):
        with storage.open_write("clinic1/failed.sql") as writer:
            for data in stream_chunks(12 * MiB):
                writer.write(data)
            raise RuntimeError("pg_dump died")

    assert storage.stat("clinic1/failed.sql") is None
    assert list(storage.list("clinic1/")) == []
    assert backend.pending_uploads() == []


def test_object_is_visible_only_after_commit(backend: Backend):
    storage = backend.storage
    with storage.open_write("clinic1/slow.sql") as writer:
        for data in stream_chunks(12 * MiB):
            writer.write(data)
        assert storage.stat("clinic1/slow.sql") is None
        assert list(storage.list("clinic1/")) == []

        writer.commit()

    assert storage.stat("clinic1/slow.sql").size == 12 * MiB
    assert [obj.key for obj in storage.list("clinic1/")] == ["clinic1/slow.sql"]
    assert backend.pending_uploads() == []


def test_small_and_empty_objects(storage):
    storage.put_bytes("clinic1/manifest.json", b'{"ok": true}')
    storage.put_bytes("clinic1/empty.sql", b"")

    assert storage.get_bytes("clinic1/manifest.json") == b'{"ok": true}'
    assert storage.get_bytes("clinic1/empty.sql") == b""
    assert storage.stat("clinic1/empty.sql").size == 0


def test_a_read_resumes_from_an_offset(storage):
    """What a restore's download does after a reset: the rest of the object, from the byte it stopped at."""
    data = bytes(range(256)) * 4096  # 1 MiB
    storage.put_bytes("clinic1/resume.sql", data)
    for offset in (1, 300_000, len(data) - 1):
        with storage.open_read("clinic1/resume.sql", offset) as stream:
            assert stream.read() == data[offset:]


UID = "0b6f2c1e-8d5a-4f0e-9a57-3c1d2e4f5a6b"


@pytest.mark.parametrize(
    "key",
    [f"clinic1/{UID}/../clinic10/a.sql", "../x", "/etc/passwd", f"clinic10/{UID}/a.sql", f"clinic1/{UID}/",
     f"clinic1/{UID}/sub/a.sql", f"clinic1/{UID}/./a.sql", "clinic1\\..\\x", f"clinic1/{UID}/a\x00.sql", "",
     "clinic1/a.sql"],
)
def test_check_tenant_key_refuses_keys_outside_the_tenant(key):
    with pytest.raises(InvalidKey):
        check_tenant_key(key, "clinic1", UID)


def test_keys_escaping_their_prefix_are_refused(storage):
    assert check_tenant_key(f"clinic1/{UID}/a.sql", "clinic1", UID) == f"clinic1/{UID}/a.sql"
    for key in ("../x", "clinic1/../../x", "/etc/passwd"):
        with pytest.raises(StorageError):
            storage.open_write(key)
        with pytest.raises(StorageError):
            storage.open_read(key)
    if isinstance(storage, LocalStorage):
        with pytest.raises(StorageError):
            storage.path("../x")
