"""audit/: who did what to the tenant's backups, from where, when."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema

from backups.api.pagination import BackupsPagination
from backups.api.schema import ADMIN, errors
from backups.api.serializers import BackupEventSerializer
from backups.backup.on_demand import api_events_for_tenant

from .base import TenantAdminAPIView


class AuditListView(TenantAdminAPIView):
    """The tenant's audit trail, newest first."""

    pagination_class = BackupsPagination

    @extend_schema(operation_id="backups_audit_list", summary="This tenant's audit trail",
                   responses={200: BackupEventSerializer(many=True), **errors(400, *ADMIN, 404)}, tags=["audit"])
    def get(self, request):
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(api_events_for_tenant(tenant=self.tenant), request, view=self)
        return paginator.get_paginated_response(BackupEventSerializer(page, many=True).data)
