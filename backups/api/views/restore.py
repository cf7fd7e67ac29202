"""history/<id>/restore/ and verify/: a RestoreJob run by the worker; restores/<job_id>/ follows it."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from backups.api.schema import ADMIN, errors
from backups.api.serializers import RestoreJobSerializer, SafeCharField
from backups.backup.on_demand import api_record_get
from backups.models import RestoreJob
from backups.restore.jobs import api_restore_job_get, api_restore_request

from .base import TenantAdminAPIView
from .history import RECORD_ID


class RestoreInputSerializer(serializers.Serializer):
    """The confirmation a restore needs."""

    confirm = SafeCharField(max_length=63, help_text="This tenant's schema name, typed again to confirm.")


class _RestoreView(TenantAdminAPIView):
    mode = RestoreJob.Mode.REPLACE

    def post(self, request, record_id):
        body = RestoreInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        record = api_record_get(tenant=self.tenant, record_id=record_id)
        job = api_restore_request(tenant=self.tenant, record=record, mode=self.mode,
                                  confirm=body.validated_data["confirm"], actor=self.actor(), ip_address=self.ip())
        data = RestoreJobSerializer(job, context={"request": request}).data
        return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": data["links"]["self"]})


RESTORE_RESPONSES = {202: OpenApiResponse(RestoreJobSerializer, description="The queued job; follow links.self."),
                     **errors(400, *ADMIN, 404, 409)}


class RestoreView(_RestoreView):
    """Replace the tenant's live schema with a backup."""

    @extend_schema(
        operation_id="backups_history_restore",
        summary="Restore a backup over the live data",
        description="Takes a safety backup, then replaces the tenant's schema with the backup in one transaction "
                    "(the live schema stays as it was if anything fails). Needs `confirm` = the schema name.",
        parameters=[RECORD_ID], request=RestoreInputSerializer, responses=RESTORE_RESPONSES, tags=["restore"],
    )
    def post(self, request, record_id):
        return super().post(request, record_id)


class VerifyView(_RestoreView):
    """Restore a backup into a scratch database and compare its row counts with the manifest."""

    mode = RestoreJob.Mode.VERIFY

    @extend_schema(
        operation_id="backups_history_verify",
        summary="Verify a backup in a scratch database",
        description="Restores the backup into a scratch database, compares row counts with its manifest and drops "
                    "it; the live data is not touched. Needs `confirm` = the schema name.",
        parameters=[RECORD_ID], request=RestoreInputSerializer, responses=RESTORE_RESPONSES, tags=["restore"],
    )
    def post(self, request, record_id):
        return super().post(request, record_id)


class RestoreJobDetailView(TenantAdminAPIView):
    """How a restore job stands."""

    @extend_schema(
        operation_id="backups_restores_retrieve",
        summary="One restore job",
        parameters=[OpenApiParameter("job_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="The job's id.")],
        responses={200: RestoreJobSerializer, **errors(*ADMIN, 404)},
        tags=["restore"],
    )
    def get(self, request, job_id):
        job = api_restore_job_get(tenant=self.tenant, job_id=job_id)
        return Response(RestoreJobSerializer(job, context={"request": request}).data)
