"""The API's settings: read through backups.conf, where every setting has its default."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.utils.module_loading import import_string

from backups import conf


def api_setting(name: str) -> Any:
    """A setting the API reads, falling back to its default."""
    return conf.get(name)


@functools.lru_cache(maxsize=8)
def _load(path: str) -> Callable[[Any, Any], bool]:
    return import_string(path)


def tenant_admin_check() -> Callable[[Any, Any], bool]:
    """The callable (user, tenant) -> bool that BACKUPS_IS_TENANT_ADMIN names."""
    value = api_setting("BACKUPS_IS_TENANT_ADMIN")
    return value if callable(value) else _load(value)
