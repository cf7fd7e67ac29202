"""The API's settings, with defaults, so a host project sets only what it changes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

API_DEFAULTS: dict[str, Any] = {
    "BACKUPS_IS_TENANT_ADMIN": "accounts.roles.is_tenant_admin",
    "BACKUPS_SYNC_WAIT_SECONDS": 30,
    "BACKUPS_MANUAL_PER_HOUR": 6,
    "BACKUPS_URL_MAX_EXPIRY": 7 * 24 * 3600,
    "BACKUPS_URL_DEFAULT_EXPIRY": 3600,
    "BACKUPS_SYNC_POLL_SECONDS": 0.2,
    "BACKUPS_STREAM_CHUNK_BYTES": 1 << 20,
}


def api_setting(name: str) -> Any:
    """A setting the API reads, falling back to its default."""
    return getattr(settings, name, API_DEFAULTS[name])


@functools.lru_cache(maxsize=8)
def _load(path: str) -> Callable[[Any, Any], bool]:
    return import_string(path)


def tenant_admin_check() -> Callable[[Any, Any], bool]:
    """The callable (user, tenant) -> bool that BACKUPS_IS_TENANT_ADMIN names."""
    value = api_setting("BACKUPS_IS_TENANT_ADMIN")
    return value if callable(value) else _load(value)
