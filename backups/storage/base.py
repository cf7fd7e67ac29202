"""The storage interface every backend implements: streams in, streams out, never whole objects."""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO


class StorageError(Exception):
    """A storage operation failed for good (bad configuration, refused request)."""


class StorageTransientError(StorageError):
    """A storage operation failed in a way worth retrying (network, throttling)."""


class ObjectNotFound(StorageError):
    """The key names no object."""


class ObjectLocked(StorageError):
    """The store refuses to delete the object before its Object Lock retain-until date (`until`, when known)."""

    def __init__(self, message: str, *, until: datetime | None = None) -> None:
        super().__init__(message)
        self.until = until


@dataclass(frozen=True)
class StoredObject:
    """What a backend knows about one object."""

    key: str
    size: int
    last_modified: datetime
    storage_class: str = ""


class ObjectWriter(abc.ABC):
    """A streaming upload: nothing is visible under the key until `commit()`."""

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Append bytes."""

    @abc.abstractmethod
    def commit(self) -> None:
        """Make the object visible under its key."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Discard everything written; safe to call twice or after a failed commit."""

    def __enter__(self) -> ObjectWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


class Storage(abc.ABC):
    """A place to keep backups. Keys are `<schema>/<file>`; each backend maps them to its own layout."""

    name: str = ""
    # "GOVERNANCE" or "COMPLIANCE" when the backend sets an S3 Object Lock retain-until on what it writes
    object_lock_mode: str = ""

    @abc.abstractmethod
    def open_write(self, key: str, *, retain_until: datetime | None = None) -> ObjectWriter:
        """Start a streaming upload to `key`; `retain_until` locks the object until then where the backend
        locks objects (object_lock_mode), and is ignored elsewhere."""

    @abc.abstractmethod
    def open_read(self, key: str, offset: int = 0) -> BinaryIO:
        """A readable stream of the object's bytes from `offset` (a context manager); ObjectNotFound if missing.

        A read cut by the network resumes where it stopped instead of fetching gigabytes again."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Delete the object; deleting a missing key is not an error."""

    @abc.abstractmethod
    def list(self, prefix: str) -> Iterator[StoredObject]:
        """Every object whose key starts with `prefix`, all pages."""

    @abc.abstractmethod
    def stat(self, key: str) -> StoredObject | None:
        """The object's size and date, or None when it does not exist."""

    @abc.abstractmethod
    def url(self, key: str, expires_in: int, *, bound: dict | None = None) -> str:
        """A link that downloads the object for `expires_in` seconds.

        `bound` is what the link is bound to (the user and credential that asked, see backups.api.tokens); a
        backend that signs its own links (local) carries it so the download can check it; a presigned S3 or
        Supabase link cannot be revoked and ignores it."""

    def check(self) -> None:  # noqa: B027 - optional hook, most backends have something to check
        """Raise StorageError with one sentence naming the setting when the backend cannot work."""

    def extend_lock(self, key: str, until: datetime) -> None:  # noqa: B027 - only locking backends lock
        """Keep the object locked at least until `until` (never shortens a lock); nothing where nothing locks."""

    def open_write_batched(self, key: str) -> ObjectWriter:
        """Like open_write, for one of many small objects made durable together by sync_batched (a backend whose
        commit is durable by itself needs nothing more)."""
        return self.open_write(key)

    def sync_batched(self) -> None:  # noqa: B027 - most backends' commits are durable by themselves
        """Make every object written through open_write_batched durable (before anything that refers to them)."""

    def put_bytes(self, key: str, data: bytes, *, retain_until: datetime | None = None) -> None:
        """Store a small object (a manifest) in one go."""
        with self.open_write(key, retain_until=retain_until) if retain_until else self.open_write(key) as writer:
            writer.write(data)
            writer.commit()

    def get_bytes(self, key: str) -> bytes:
        """Read a small object (a manifest) whole."""
        with self.open_read(key) as stream:
            return stream.read()


def kwargs_from_settings(settings: Any, arguments: Mapping[str, str], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments read from Django settings: `arguments` maps each to its setting's name.

    A setting that is missing or None takes its default, so a host project sets only what it changes.
    """
    if settings is None:
        from django.conf import settings
    values = {}
    for argument, name in arguments.items():
        value = getattr(settings, name, None)
        values[argument] = defaults[name] if value is None else value
    return values

