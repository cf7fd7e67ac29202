"""The API's settings: read through backups.conf.backups_settings, where every setting has its default."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from backups.conf import backups_settings


def api_setting(name: str) -> Any:
    """Deprecated (kept for one release): read `backups_settings.<name>`; an unknown name raises AttributeError."""
    return getattr(backups_settings, name)


def tenant_admin_check() -> Callable[[Any, Any], bool]:
    """The callable (user, tenant) -> bool that BACKUPS_IS_TENANT_ADMIN names (imported by backups.conf)."""
    return backups_settings.BACKUPS_IS_TENANT_ADMIN

