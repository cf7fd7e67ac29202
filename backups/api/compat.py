"""The source documents' API on the product's paths, when BACKUPS_API_COMPAT is on (off: nothing here answers).

Their clients (`Authorization: Bearer <jwt>` or `Token <key>`, both already accepted) expect create/ to answer
201 with the finished backup as `{"message", "backup_info"}`, `?download=true` to answer the plain `.sql`, the
history as one array, sizes in MiB, `created_by.nombre`, a link beside each listed object and cloud/download/
to answer a link. Only the endpoints whose answers differ have a view here; each reshapes what the product's
services return. The switch is read on every request, so a settings change needs no restart of the URLconf.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict

from django.http import StreamingHttpResponse
from django.utils.http import content_disposition_header
from rest_framework import serializers, status
from rest_framework.response import Response

from backups.api.serializers import actor_or_none
from backups.api.services.cloud import api_cloud_list
from backups.api.services.compat import (
    api_compat_backup_create,
    api_compat_cloud_info,
    api_compat_cloud_links,
    api_compat_enabled,
    api_compat_history,
    api_compat_is_done,
)
from backups.api.services.plain import api_plain_chunks, api_plain_open
from backups.api.tokens import link_binding
from backups.backup.on_demand import HistoryFilters, api_download_recorded
from backups.models import BackupRecord
from backups.storage import get_storage

from .views.base import AnyAcceptNegotiation, TenantAdminAPIView, TenantAPIView
from .views.cloud import CloudObjectSerializer, CloudUrlView
from .views.create import BackupCreateInputSerializer, BackupCreateQuerySerializer
from .views.history import HistoryFilterSerializer

MIB = 1 << 20


class CompatBackupInfoSerializer(serializers.ModelSerializer):
    """A backup as the documents show it: bytes and MiB, `created_by` with `nombre`."""

    file_size = serializers.IntegerField(source="size", allow_null=True, read_only=True)
    file_size_mb = serializers.SerializerMethodField()
    created_by = serializers.SerializerMethodField()

    class Meta:
        model = BackupRecord
        fields = ("id", "file_name", "file_size", "file_size_mb", "backup_type", "created_by", "created_at",
                  "status", "format", "compression", "sha256")
        read_only_fields = fields

    def get_file_size_mb(self, record: BackupRecord) -> float | None:
        return None if record.size is None else round(record.size / MIB, 2)

    def get_created_by(self, record: BackupRecord) -> dict | None:
        actor = actor_or_none(record.requested_by)
        return None if actor is None else {"id": actor["id"], "email": actor["email"], "nombre": actor["name"]}


class CompatCreateView(TenantAdminAPIView):
    """create/: the backup done when it answers (201), or 202 with its status past BACKUPS_SYNC_WAIT_SECONDS."""

    content_negotiation_class = AnyAcceptNegotiation

    def post(self, request):
        query = BackupCreateQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        body = BackupCreateInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        record = api_compat_backup_create(tenant=self.tenant, actor=self.actor(), ip_address=self.ip(),
                                          fmt=body.validated_data.get("format"),
                                          compression=body.validated_data.get("compression"))
        info = CompatBackupInfoSerializer(record).data
        if not api_compat_is_done(record):
            return Response({"message": f"The backup is still {record.status}; see history/{record.pk}/.",
                             "status": record.status, "backup_info": info}, status=status.HTTP_202_ACCEPTED)
        if record.status != BackupRecord.Status.SUCCEEDED:
            return Response({"message": "The backup failed.", "error": record.error, "detail": record.error,
                             "status": record.status, "backup_info": info},
                            status=status.HTTP_500_INTERNAL_SERVER_ERROR)
        storage = get_storage(record.storage_backend)
        if query.validated_data["cloud_only"]:
            cloud = asdict(api_compat_cloud_info(record=record, tenant=self.tenant, actor=self.actor(),
                                                 ip_address=self.ip(), storage=storage, bound=link_binding(request)))
            cloud["url"] = self._absolute(cloud["url"])
            return Response({"message": "Backup created and stored.", "backup_info": {**info, **cloud}},
                            status=status.HTTP_201_CREATED)
        if query.validated_data["download"]:
            opened = api_plain_open(record=record, storage=storage)
            api_download_recorded(record=record, tenant=self.tenant, actor=self.actor(), ip_address=self.ip(),
                                  via="create", key=record.storage_key)
            response = StreamingHttpResponse(api_plain_chunks(opened), content_type="application/octet-stream")
            response["Content-Disposition"] = content_disposition_header(True, opened.file_name)
            response["Cache-Control"] = "no-store"
            response["X-Content-Type-Options"] = "nosniff"
            if record.plain_size is not None:
                response["Content-Length"] = str(record.plain_size)
            if record.plain_sha256:
                response["X-Backup-SHA256"] = record.plain_sha256
            return response
        return Response({"message": "Backup created.", "backup_info": info}, status=status.HTTP_201_CREATED)

    def _absolute(self, url: str) -> str:
        """The local backend's links are paths on this domain."""
        return self.request.build_absolute_uri(url) if url.startswith("/") else url


class CompatHistoryListView(TenantAPIView):
    """history/: one array, newest first, capped by BACKUPS_API_COMPAT_HISTORY_LIMIT."""

    def get(self, request):
        filters = HistoryFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        records = api_compat_history(tenant=self.tenant, filters=HistoryFilters(
            backup_type=data.get("type"), status=data.get("status"), date_from=data.get("date_from"),
            date_to=data.get("date_to")))
        return Response(CompatBackupInfoSerializer(records, many=True).data)


class CompatCloudObjectSerializer(CloudObjectSerializer):
    """A listed object with its time-limited link."""

    url = serializers.CharField()


class CompatCloudListView(TenantAdminAPIView):
    """cloud/list/: the product's list, each object with a link (BACKUPS_URL_DEFAULT_EXPIRY seconds)."""

    def get(self, request):
        storage = get_storage()
        objects = api_cloud_list(tenant=self.tenant, storage=storage)
        urls = api_compat_cloud_links(objects=objects, tenant=self.tenant, actor=self.actor(), ip_address=self.ip(),
                                      storage=storage, bound=link_binding(request))
        backups = [{**asdict(obj), "url": request.build_absolute_uri(url) if url.startswith("/") else url}
                   for obj, url in zip(objects, urls, strict=True)]
        return Response({"count": len(backups), "schema": self.schema_name,
                         "backups": CompatCloudObjectSerializer(backups, many=True).data})


class CompatCloudDownloadView(CloudUrlView):
    """cloud/download/: the documents answer a link to the object (as cloud/get-url/ does), not its bytes."""


COMPAT_VIEWS: dict[str, type] = {
    "create": CompatCreateView,
    "history-list": CompatHistoryListView,
    "cloud-list": CompatCloudListView,
    "cloud-download": CompatCloudDownloadView,
}


def compat_switch(product_view: Callable, compat_view: Callable) -> Callable:
    """A view that is `compat_view` while BACKUPS_API_COMPAT is on, else `product_view`; it keeps the product
    view's attributes (`cls`, `csrf_exempt`), so the OpenAPI schema still describes the product's API."""

    @functools.wraps(product_view)
    def view(request, *args, **kwargs):
        chosen = compat_view if api_compat_enabled() else product_view
        return chosen(request, *args, **kwargs)

    return view


def with_compat_views(urlpatterns: list) -> list:
    """The URL patterns with each endpoint the documents answer differently switched by BACKUPS_API_COMPAT."""
    for pattern in urlpatterns:
        compat = COMPAT_VIEWS.get(getattr(pattern, "name", None) or "")
        if compat is not None:
            pattern.callback = compat_switch(pattern.callback, compat.as_view())
    return urlpatterns
