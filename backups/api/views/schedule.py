"""schedule/: the tenant's backup schedule and retention (any user reads, administrators change)."""

from __future__ import annotations

from django_tenants.utils import get_tenant_model
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from backups.api.permissions import IsTenantAdmin, IsTenantUser
from backups.api.schema import ADMIN, AUTHED, errors
from backups.api.serializers import SafeCharField, WallClockTimeField
from backups.api.services.schedule import EDITABLE_FIELDS, api_schedule_defaults, api_schedule_update

from .base import TenantAPIView


class ScheduleSerializer(serializers.ModelSerializer):
    """The schedule and retention fields; `next_backup_at`, `last_backup_at` and `backup_overdue_since` are computed
    (the last: since when the overdue check has found this tenant's automatic backups behind, else null)."""

    backup_time = WallClockTimeField(required=False, allow_null=True,
                                     help_text="Local wall-clock time of the backup (base time for every_12h / "
                                               "every_6h), HH:MM[:SS].")
    backup_timezone = SafeCharField(max_length=64, allow_blank=True, required=False,
                                    help_text="IANA time zone of backup_time; empty means the project's TIME_ZONE.")

    class Meta:
        model = get_tenant_model()
        fields = (*EDITABLE_FIELDS, "next_backup_at", "last_backup_at", "backup_overdue_since")
        read_only_fields = ("next_backup_at", "last_backup_at", "backup_overdue_since")


class ScheduleView(TenantAPIView):
    """Read or change the schedule."""

    def get_permissions(self):
        return [IsTenantUser() if self.request.method == "GET" else IsTenantAdmin()]

    def _tenant(self):
        return get_tenant_model().objects.get(pk=self.tenant.pk)

    @extend_schema(operation_id="backups_schedule_retrieve", summary="This tenant's backup schedule",
                   responses={200: ScheduleSerializer, **errors(*AUTHED)}, tags=["schedule"])
    def get(self, request):
        return Response(ScheduleSerializer(self._tenant()).data)

    def _change(self, request, *, partial: bool):
        body = ScheduleSerializer(data=request.data, partial=partial)
        body.is_valid(raise_exception=True)
        changes = dict(body.validated_data) if partial else {**api_schedule_defaults(), **body.validated_data}
        tenant = api_schedule_update(tenant_id=self.tenant.pk, changes=changes, actor=self.actor(),
                                     ip_address=self.ip())
        return Response(ScheduleSerializer(tenant).data)

    @extend_schema(operation_id="backups_schedule_update", summary="Replace the schedule (omitted fields: defaults)",
                   description="Validated by the tenant model's own checks: errors come back per field (400).",
                   request=ScheduleSerializer, responses={200: ScheduleSerializer, **errors(400, *ADMIN)},
                   tags=["schedule"])
    def put(self, request):
        return self._change(request, partial=False)

    @extend_schema(operation_id="backups_schedule_partial_update", summary="Change some schedule fields",
                   description="Validated by the tenant model's own checks: errors come back per field (400).",
                   request=ScheduleSerializer, responses={200: ScheduleSerializer, **errors(400, *ADMIN)},
                   tags=["schedule"])
    def patch(self, request):
        return self._change(request, partial=True)
