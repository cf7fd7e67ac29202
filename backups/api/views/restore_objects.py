"""history/<id>/restore-objects/: put back objects of a backup with what hung from them (a RestoreJob)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from backups.api.serializers import RestoreJobSerializer, SafeCharField
from backups.api.services.restore_objects import api_restore_objects_request
from backups.backup.on_demand import api_record_get

from .base import TenantAdminAPIView
from .history import RECORD_ID
from .restore import RESTORE_RESPONSES


class RestoreObjectsInputSerializer(serializers.Serializer):
    """Which objects to put back."""

    model = SafeCharField(max_length=200, help_text="The model, as app_label.Model (e.g. clinic.Patient).")
    pks = serializers.ListField(child=SafeCharField(max_length=255), min_length=1, max_length=10000,
                                help_text="Primary keys of the objects to restore.")
    dry_run = serializers.BooleanField(default=False, help_text="Only report what would be inserted.")


class RestoreObjectsView(TenantAdminAPIView):
    """Restore objects of a backup, and what pointed at them, where the live data lacks them."""

    @extend_schema(
        operation_id="backups_history_restore_objects",
        summary="Restore objects of a backup, with what hung from them",
        description="Puts back the named objects and, recursively, every object of the backup that pointed at them "
                    "(a patient with its appointments, treatments and invoices) where the live data lacks them, in "
                    "one transaction. Rows that exist live are left as they are and reported as conflicts; nothing "
                    "live is overwritten. `dry_run` only reports. The job's report lists what was inserted.",
        parameters=[RECORD_ID], request=RestoreObjectsInputSerializer, responses=RESTORE_RESPONSES,
        tags=["restore"],
    )
    def post(self, request, record_id):
        body = RestoreObjectsInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        record = api_record_get(tenant=self.tenant, record_id=record_id)
        data = body.validated_data
        job = api_restore_objects_request(tenant=self.tenant, record=record, model=data["model"], pks=data["pks"],
                                          dry_run=data["dry_run"], actor=self.actor(), ip_address=self.ip())
        out = RestoreJobSerializer(job, context={"request": request}).data
        return Response(out, status=status.HTTP_202_ACCEPTED, headers={"Location": out["links"]["self"]})
