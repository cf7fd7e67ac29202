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
    "StoredObject", "get_copy_storage", "get_storage",
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


class _CopySettings:
    """The copy target's settings under the primary's names: AWS_S3_SSE reads BACKUPS_COPY_AWS_S3_SSE, ..."""

    def __getattr__(self, name: str):
        from backups.conf import backups_settings, copy_setting_name

        mirrored = copy_setting_name(name)
        if mirrored in backups_settings.defaults:
            return getattr(backups_settings, mirrored)
        return getattr(backups_settings, name, None)  # shared with the primary (BACKUPS_URL_MAX_EXPIRY)


def get_copy_storage() -> Storage | None:
    """The second target (BACKUPS_COPY_STORAGE), or None when backups are not copied."""
    from backups import conf
    from backups.conf import backups_settings, copy_setting_name

    name = backups_settings.BACKUPS_COPY_STORAGE
    if not name:
        return None
    if name == "local":
        from .local import LocalStorage

        return LocalStorage(conf.local_root("BACKUPS_COPY_LOCAL_ROOT"))
    if name == "s3":
        from .s3 import DEFAULT_SETTING_NAMES, S3Storage

        names = {what: "/".join(copy_setting_name(n) for n in setting.split("/"))
                 for what, setting in DEFAULT_SETTING_NAMES.items() if what != "url_max_expiry"}
        return S3Storage.from_settings(_CopySettings(), setting_names=names)
    if name == "supabase":
        from .supabase import SupabaseStorage

        return SupabaseStorage.from_settings(_CopySettings())
    raise StorageError(f"BACKUPS_COPY_STORAGE={name!r} is not a known backend (use local, s3, supabase or leave it "
                       "empty).")
