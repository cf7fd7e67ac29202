"""POST create/: a manual backup now, on the priority queue; `?download=true` waits for it and sends the file."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from backups.api.schema import ADMIN, BINARY, STORAGE, errors
from backups.api.serializers import BackupRecordSerializer
from backups.api.services.streaming import api_object_open
from backups.backup.on_demand import api_backup_create, api_backup_wait, api_download_recorded
from backups.conf import backups_settings
from backups.models import BackupRecord
from backups.storage import get_storage

from .base import AnyAcceptNegotiation, TenantAdminAPIView, stream_response


class BackupCreateQuerySerializer(serializers.Serializer):
    """How to answer."""

    download = serializers.BooleanField(
        required=False, default=False,
        help_text="Wait up to BACKUPS_SYNC_WAIT_SECONDS for the backup and answer with the file (200); "
                  "if it is not done by then, answer 202 with the record.")
    cloud_only = serializers.BooleanField(
        required=False, default=False, help_text="Keep the backup in the storage only: never answer with the file.")


class BackupCreateInputSerializer(serializers.Serializer):
    """What to back up into; both default to the deployment's settings."""

    format = serializers.ChoiceField(choices=BackupRecord.Format.choices, required=False,
                                     help_text="sql (psql), dump (pg_restore) or json (portable JSON Lines).")
    compression = serializers.ChoiceField(choices=BackupRecord.Compression.choices, required=False)


class BackupCreateView(TenantAdminAPIView):
    """Create a manual backup of this tenant."""

    content_negotiation_class = AnyAcceptNegotiation

    @extend_schema(
        operation_id="backups_create",
        summary="Create a manual backup now",
        description="Queues a backup of this tenant on the priority queue and answers 202 with its record. "
                    "`?download=true` waits for it and answers 200 with the file (header `X-Backup-SHA256`). "
                    "409 while a backup or restore of this tenant is queued or running; 429 past "
                    "BACKUPS_MANUAL_PER_HOUR manual backups in the last hour (Retry-After says when).",
        parameters=[BackupCreateQuerySerializer],
        request=BackupCreateInputSerializer,
        responses={
            (200, "application/octet-stream"): OpenApiResponse(BINARY, description="The backup file, streamed."),
            202: OpenApiResponse(BackupRecordSerializer, description="The queued (or unfinished) backup."),
            **errors(400, *ADMIN, 404, 409, *STORAGE),
        },
        tags=["backups"],
    )
    def post(self, request):
        query = BackupCreateQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        body = BackupCreateInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        record = api_backup_create(tenant=self.tenant, actor=self.actor(), ip_address=self.ip(),
                                   fmt=body.validated_data.get("format"),
                                   compression=body.validated_data.get("compression"))
        if query.validated_data["download"] and not query.validated_data["cloud_only"]:
            record = api_backup_wait(record_id=record.pk, timeout=backups_settings.BACKUPS_SYNC_WAIT_SECONDS)
            if record.status == BackupRecord.Status.SUCCEEDED:
                opened = api_object_open(storage=get_storage(record.storage_backend), key=record.storage_key,
                                         record=record)
                api_download_recorded(record=record, tenant=self.tenant,
                                      actor=self.actor(), ip_address=self.ip(), via="create",
                                      key=record.storage_key)
                return stream_response(opened)
        data = BackupRecordSerializer(record, context={"request": request}).data
        return Response(data, status=status.HTTP_202_ACCEPTED,
                        headers={"Location": data["links"]["self"]})
