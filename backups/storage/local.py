"""Local-folder storage: `<root>/<schema>/<file>`, written 0600 and renamed into place when complete."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import stat
import uuid
from collections.abc import Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from django.core import signing

from .base import ObjectNotFound, ObjectWriter, Storage, StorageError, StoredObject

PARTIAL_PREFIX = ".partial-"
URL_SALT = "backups.local-url"


def _private_dirs(directory: Path) -> None:
    """`mkdir -p` with every new level 0700: `mkdir(parents=True, mode=0o700)` gives the mode to the last level
    only, so `<root>/<schema>/` (which names the tenants) came out 0755."""
    missing = []
    while not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for level in reversed(missing):
        try:
            level.mkdir(mode=0o700)
        except FileExistsError:  # another writer made it a moment ago
            pass


def _syncfs():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


_libc_syncfs = _syncfs()


class LocalWriter(ObjectWriter):
    """Writes to a hidden temporary file beside the target; commit fsyncs and links it into place.

    Every `sync_every` bytes a helper thread starts an fdatasync of what was written so far, while writing
    goes on: dirty pages stay bounded whatever the dump's size, and commit's final fsync only has the
    last stretch left to flush instead of the whole file (bench/bench_pipeline.py shows the tail).
    """

    sync_every = 32 << 20

    def __init__(self, path: Path, *, durable: bool = True) -> None:
        self.path = path
        self.durable = durable  # False: the storage's sync_batched makes it durable later (one syncfs for many)
        _private_dirs(path.parent)
        self.tmp = path.with_name(f"{PARTIAL_PREFIX}{uuid.uuid4().hex}-{path.name}")
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.file = os.fdopen(fd, "wb", buffering=0)
        self.done = False
        self.unsynced = 0
        self._syncer: ThreadPoolExecutor | None = None
        self._sync: Future | None = None

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:  # an unbuffered write may be short (a nearly full disk): the rest, or ENOSPC, comes next
            view = view[self.file.write(view):]
        self.unsynced += len(data)
        if self.unsynced >= self.sync_every and (self._sync is None or self._sync.done()):
            self.unsynced = 0
            if self._syncer is None:
                self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-sync")
            self._sync = self._syncer.submit(os.fdatasync, self.file.fileno())

    def _wait_for_sync(self) -> None:
        """The fd must outlive any fdatasync still running on it (a closed fd number can be reused)."""
        sync, self._sync = self._sync, None
        if self._syncer is not None:
            self._syncer.shutdown(wait=True)
            self._syncer = None
        if sync is not None and sync.exception() is not None:
            raise sync.exception()

    def commit(self) -> None:
        self.file.flush()
        try:
            self._wait_for_sync()
            if self.durable:
                os.fsync(self.file.fileno())
        except BaseException:
            self.abort()
            raise
        self.file.close()
        try:
            os.link(self.tmp, self.path)  # unlike rename, refuses to overwrite an existing backup
        except FileExistsError:
            self.abort()
            raise StorageError(f"An object already exists at {self.path.name}; refusing to overwrite it.") from None
        os.unlink(self.tmp)
        self.done = True

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        with contextlib.suppress(OSError):
            self._wait_for_sync()
        if not self.file.closed:
            self.file.close()
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


class LocalStorage(Storage):
    """Backups in a folder of the worker's host (the default; needs nothing)."""

    name = "local"

    def __init__(self, root: Path, public_url: str = "") -> None:
        self.root = Path(root)
        self.public_url = public_url.rstrip("/")

    def path(self, key: str) -> Path:
        """The file for `key`, refusing anything that would leave the root or that no file system could name."""
        if any(len(part.encode("utf-8", "surrogateescape")) > 255 for part in key.split("/")):
            raise StorageError(f"Key {key[:80]!r}... has a segment longer than 255 bytes.")
        path = (self.root / key).resolve()
        root = self.root.resolve()
        if root not in path.parents:
            raise StorageError(f"Key {key!r} is outside the storage root.")
        return path

    def open_write(self, key: str, *, retain_until: datetime | None = None) -> ObjectWriter:
        return LocalWriter(self.path(key))

    def open_write_batched(self, key: str) -> ObjectWriter:
        return LocalWriter(self.path(key), durable=False)

    def sync_batched(self) -> None:
        """One syncfs(2) of the root's file system: what a thousand fsyncs of small files cost one by one (about
        6 ms each on this machine's disk), in one journal commit."""
        fd = os.open(self.root, os.O_RDONLY)
        try:
            if _libc_syncfs is None or _libc_syncfs(fd) != 0:
                os.sync()
        finally:
            os.close(fd)

    def open_read(self, key: str, offset: int = 0) -> BinaryIO:
        try:
            stream = open(self.path(key), "rb")
        except FileNotFoundError:
            raise ObjectNotFound(f"No backup object at {key}.") from None
        stream.seek(offset)
        return stream

    def delete(self, key: str) -> None:
        try:
            os.unlink(self.path(key))
        except FileNotFoundError:
            pass

    def list(self, prefix: str) -> Iterator[StoredObject]:
        """Walks only the folder the prefix names (`<schema>/<identity>/` of one tenant, not the whole root: a
        reconcile or recovery of 1,000 tenants lists each one's folder), statting each file once."""
        base = self.root.resolve()
        head = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        parts = head.split("/") if head else []
        start = base.joinpath(*parts) if parts and not any(p in ("", ".", "..") for p in parts) else base
        if not start.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            for name in sorted(filenames):
                if name.startswith(PARTIAL_PREFIX):
                    continue
                path = os.path.join(dirpath, name)
                key = os.path.relpath(path, base).replace(os.sep, "/")
                if not key.startswith(prefix):
                    continue
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue
                if stat.S_ISLNK(st.st_mode):  # where a link points is for path() to judge
                    obj = self.stat(key)
                    if obj is not None:
                        yield obj
                    continue
                yield StoredObject(key=key, size=st.st_size, last_modified=datetime.fromtimestamp(st.st_mtime, UTC))

    def abort_incomplete_uploads(self, prefix: str = "", older_than: timedelta | datetime = timedelta(days=1),
                                 keep: Collection[str] = ()) -> int:
        """Remove the `.partial-*` files of killed writers not written to since `older_than`; the count.

        A live writer touches its file with every write, and no backup runs longer than the hard time limit,
        so with that as the age bound only dead writers' files go.
        """
        cutoff = (datetime.now(UTC) - older_than if isinstance(older_than, timedelta) else older_than).timestamp()
        base = self.root.resolve()
        removed = 0
        if not base.is_dir():
            return 0
        for dirpath, _, filenames in os.walk(base):
            for name in filenames:
                path = os.path.join(dirpath, name)
                key = os.path.relpath(path, base).replace(os.sep, "/")
                if not name.startswith(PARTIAL_PREFIX) or not key.startswith(prefix):
                    continue
                target = key.rsplit("/", 1)[0] + "/" + name[len(PARTIAL_PREFIX) + 33:]  # .partial-<uuid hex>-<name>
                if target in keep:
                    continue
                try:
                    if os.stat(path).st_mtime < cutoff:
                        os.unlink(path)
                        removed += 1
                except FileNotFoundError:
                    pass
        return removed

    def stat(self, key: str) -> StoredObject | None:
        try:
            st = os.stat(self.path(key))
        except FileNotFoundError:
            return None
        return StoredObject(key=key, size=st.st_size, last_modified=datetime.fromtimestamp(st.st_mtime, UTC))

    def url(self, key: str, expires_in: int, *, bound: dict | None = None) -> str:
        """A signed, expiring link served by the project's local-download view; `bound` rides in its payload."""
        payload = {"k": key, "e": int(datetime.now(UTC).timestamp()) + expires_in}
        if bound is not None:
            payload["b"] = bound
        token = signing.dumps(payload, salt=URL_SALT)
        return f"{self.public_url}/api/backups/local-download/{token}/"

    def check(self) -> None:
        try:
            _private_dirs(self.root)
        except OSError as exc:
            raise StorageError(f"BACKUPS_LOCAL_ROOT {self.root} cannot be created: {exc.strerror}.") from None
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"BACKUPS_LOCAL_ROOT {self.root} is not writable.")


def resolve_signed_link(token: str) -> tuple[str, dict | None]:
    """The key a local link names and what it is bound to, if its signature holds and it has not expired."""
    data = signing.loads(token, salt=URL_SALT)
    if data["e"] < datetime.now(UTC).timestamp():
        raise signing.BadSignature("expired")
    return data["k"], data.get("b")


def resolve_signed_key(token: str) -> str:
    """The key a local link names, if its signature holds and it has not expired."""
    return resolve_signed_link(token)[0]


def is_disk_full(exc: BaseException) -> bool:
    """Whether an error is the disk filling up."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
