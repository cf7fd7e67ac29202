"""Pick the storage backend from settings."""

from __future__ import annotations

from .base import (
    ObjectLocked,
    ObjectNotFound,
    ObjectWriter,
    Storage,
    StorageError,
    StorageTransientError,
    StoredObject,
)

__all__ = [
    "ObjectLocked", "ObjectNotFound", "ObjectWriter", "Storage", "StorageError", "StorageTransientError",
    "StoredObject", "get_storage",
]


def get_storage(name: str | None = None) -> Storage:
    """The configured backend (BACKUPS_STORAGE), or the one named."""
    from backups import conf
    from backups.conf import backups_settings

    name = name or backups_settings.BACKUPS_STORAGE
    if name == "local":
        from .local import LocalStorage

        return LocalStorage(conf.local_root())
    if name == "s3":
        from .s3 import S3Storage

        return S3Storage.from_settings()
    if name == "supabase":
        from .supabase import SupabaseStorage

        return SupabaseStorage.from_settings()
    raise StorageError(f"BACKUPS_STORAGE={name!r} is not a known backend (use local, s3 or supabase).")
