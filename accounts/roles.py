"""Who manages a clinic's backups: the default of the BACKUPS_IS_TENANT_ADMIN setting."""

from __future__ import annotations

from typing import Any


def is_tenant_admin(user: Any, tenant: Any) -> bool:
    """The demo's rule: a clinic user with the ADMIN role administers that clinic's backups.

    `user` was authenticated in `tenant`'s own schema (users live there), so the role alone decides.
    """
    from accounts.models import User

    return bool(getattr(user, "is_active", False)) and getattr(user, "role", None) == User.Role.ADMIN
