"""Who may do what: any user of the tenant reads, the tenant's admins act (BACKUPS_IS_TENANT_ADMIN decides)."""

from __future__ import annotations

from django_tenants.utils import get_public_schema_name
from rest_framework.permissions import BasePermission

from backups.api.settings import tenant_admin_check


def _on_tenant(request) -> bool:
    tenant = getattr(request, "tenant", None)
    return tenant is not None and tenant.schema_name != get_public_schema_name()


class IsTenantUser(BasePermission):
    """An authenticated user of the tenant whose domain serves the request."""

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user is not None and user.is_authenticated and _on_tenant(request))


class IsTenantAdmin(IsTenantUser):
    """A user of this tenant who administers its backups."""

    message = "Only this tenant's administrators can do this."

    def has_permission(self, request, view) -> bool:
        return super().has_permission(request, view) and bool(tenant_admin_check()(request.user, request.tenant))
