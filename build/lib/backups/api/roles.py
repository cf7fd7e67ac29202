"""The default answer to "who administers this tenant's backups" (BACKUPS_IS_TENANT_ADMIN)."""

from __future__ import annotations

from typing import Any


def is_tenant_admin(user: Any, tenant: Any) -> bool:
    """An active staff user or superuser of the tenant (users live in its schema, so no tenant check is needed).

    A host project with roles of its own points BACKUPS_IS_TENANT_ADMIN at a callable (user, tenant) -> bool.
    """
    return bool(getattr(user, "is_active", False)) and bool(
        getattr(user, "is_staff", False) or getattr(user, "is_superuser", False))
