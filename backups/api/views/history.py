"""history/: the tenant's backups, one backup with its progress, its download and its deletion."""

from __future__ import annotations

from django.http import StreamingHttpResponse
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from backups.api.pagination import BackupsPagination
from backups.api.permissions import IsTenantAdmin, IsTenantUser
from backups.api.schema import ADMIN, AUTHED, BINARY, STORAGE, MessageSerializer, errors
from backups.api.serializers import BackupRecordDetailSerializer, BackupRecordSerializer
from backups.api.services.streaming import api_object_open
from backups.backup.on_demand import (
    HistoryFilters,
    api_download_recorded,
    api_record_delete,
    api_record_get,
    api_records_filter,
)
from backups.core.service_errors import ConflictError, NotFoundError
from backups.models import BackupRecord
from backups.restore.files import backup_files, files_tar_chunks
from backups.storage import get_storage

from .base import AnyAcceptNegotiation, TenantAdminAPIView, TenantAPIView, stream_response

RECORD_ID = OpenApiParameter("record_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="The backup's id.")


class HistoryFilterSerializer(serializers.Serializer):
    """Filters of the history."""

    type = serializers.ChoiceField(choices=BackupRecord.Type.choices, required=False,
                                   help_text="manual, automatic or pre_restore.")
    status = serializers.ChoiceField(choices=BackupRecord.Status.choices, required=False)
    date_from = serializers.DateField(required=False, input_formats=["iso-8601"],
                                      help_text="First day (ISO date, UTC) of created_at, inclusive.")
    date_to = serializers.DateField(required=False, input_formats=["iso-8601"],
                                    help_text="Last day (ISO date, UTC) of created_at, inclusive.")

    def validate(self, attrs):
        if attrs.get("date_from") and attrs.get("date_to") and attrs["date_from"] > attrs["date_to"]:
            raise serializers.ValidationError({"date_to": ["date_to is before date_from."]})
        return attrs


class HistoryListView(TenantAPIView):
    """The tenant's backups, newest first."""

    pagination_class = BackupsPagination

    @extend_schema(
        operation_id="backups_history_list",
        summary="List this tenant's backups",
        parameters=[HistoryFilterSerializer],
        responses={200: BackupRecordSerializer(many=True), **errors(400, *AUTHED, 404)},
        tags=["history"],
    )
    def get(self, request):
        filters = HistoryFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        qs = api_records_filter(tenant=self.tenant, filters=HistoryFilters(
            backup_type=data.get("type"), status=data.get("status"), date_from=data.get("date_from"),
            date_to=data.get("date_to")))
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(BackupRecordSerializer(page, many=True,
                                                                       context={"request": request}).data)


class HistoryDetailView(TenantAPIView):
    """One backup (any user of the tenant reads it; its administrators delete it)."""

    def get_permissions(self):
        return [IsTenantAdmin() if self.request.method == "DELETE" else IsTenantUser()]

    @extend_schema(
        operation_id="backups_history_retrieve",
        summary="One backup, with its progress",
        parameters=[RECORD_ID],
        responses={200: BackupRecordDetailSerializer, **errors(*AUTHED, 404)},
        tags=["history"],
    )
    def get(self, request, record_id):
        record = api_record_get(tenant=self.tenant, record_id=record_id)
        return Response(BackupRecordDetailSerializer(record, context={"request": request}).data)

    @extend_schema(
        operation_id="backups_history_destroy",
        summary="Delete a backup: its object, its manifest and its record",
        parameters=[RECORD_ID],
        request=None,
        responses={200: MessageSerializer, **errors(*ADMIN, 404, 409, *STORAGE)},
        tags=["history"],
    )
    def delete(self, request, record_id):
        record = api_record_get(tenant=self.tenant, record_id=record_id)
        file_name = api_record_delete(record=record, actor=self.actor(), ip_address=self.ip())
        return Response({"message": f"Backup {file_name} deleted."})


class HistoryDownloadView(TenantAdminAPIView):
    """A backup's file, streamed and checked."""

    content_negotiation_class = AnyAcceptNegotiation

    @extend_schema(
        operation_id="backups_history_download",
        summary="Download a backup's file",
        description="Streams the stored object in chunks, checking its SHA-256 (also sent in `X-Backup-SHA256`) "
                    "as it goes: a damaged object makes the response end early, never cleanly.",
        parameters=[RECORD_ID],
        responses={
            (200, "application/octet-stream"): OpenApiResponse(BINARY, description="The backup file, streamed."),
            **errors(*ADMIN, 404, 409, *STORAGE),
        },
        tags=["history"],
    )
    def get(self, request, record_id):
        record = api_record_get(tenant=self.tenant, record_id=record_id)
        if record.status != BackupRecord.Status.SUCCEEDED:
            raise ConflictError(f"Backup {record.pk} is {record.status}; only a succeeded backup can be downloaded.")
        opened = api_object_open(storage=get_storage(record.storage_backend), key=record.storage_key, record=record)
        api_download_recorded(record=record, tenant=self.tenant, actor=self.actor(),
                              ip_address=self.ip(), via="history", key=record.storage_key)
        return stream_response(opened)


class HistoryFilesView(TenantAdminAPIView):
    """A backup's files (X-rays, invoices...), as they were when it was taken: one tar archive, streamed."""

    content_negotiation_class = AnyAcceptNegotiation

    @extend_schema(
        operation_id="backups_history_files",
        summary="Download a backup's files as a tar archive",
        description="The tenant's files the backup lists (path, size and SHA-256 in its manifest), decoded and "
                    "each checked against its SHA-256 before it is sent; a damaged file ends the archive early. "
                    "The database dump itself is `download/`.",
        parameters=[RECORD_ID],
        responses={
            (200, "application/x-tar"): OpenApiResponse(BINARY, description="The files, as an uncompressed tar."),
            **errors(*ADMIN, 404, 409, *STORAGE),
        },
        tags=["history"],
    )
    def get(self, request, record_id):
        record = api_record_get(tenant=self.tenant, record_id=record_id)
        if record.status != BackupRecord.Status.SUCCEEDED:
            raise ConflictError(f"Backup {record.pk} is {record.status}; only a succeeded backup can be downloaded.")
        if backup_files(record) is None:
            raise NotFoundError(f"Backup {record.pk} holds no files (taken before files were backed up, or with "
                                "BACKUPS_FILES off).")
        api_download_recorded(record=record, tenant=self.tenant, actor=self.actor(), ip_address=self.ip(),
                              via="history-files", key=record.storage_key)
        name = record.file_name.split(".", 1)[0] + "-files.tar"
        response = StreamingHttpResponse(files_tar_chunks(record=record, storage=get_storage(record.storage_backend)),
                                         content_type="application/x-tar")
        response["Content-Disposition"] = content_disposition_header(True, name)
        response["Cache-Control"] = "no-store"
        response["X-Content-Type-Options"] = "nosniff"
        return response
