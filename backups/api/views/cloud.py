"""cloud/: the tenant's objects in the storage, by key (list, download, delete, time-limited link)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from backups.api.schema import ADMIN, BINARY, STORAGE, DeleteWithBodyAutoSchema, MessageSerializer, errors
from backups.api.serializers import SafeCharField
from backups.api.services.cloud import (
    api_cloud_delete,
    api_cloud_key_parse,
    api_cloud_list,
    api_cloud_record,
    api_cloud_url,
)
from backups.api.services.streaming import api_object_open
from backups.api.tokens import link_binding
from backups.backup.on_demand import api_download_recorded
from backups.conf import backups_settings
from backups.storage import get_storage

from .base import AnyAcceptNegotiation, TenantAdminAPIView, stream_response

KEY_HELP = ("The object's key in the backup storage, `<schema>/<file>` as cloud/list/ shows it; "
            "keys outside this tenant answer 404, malformed ones 400.")


class CloudObjectSerializer(serializers.Serializer):
    """One object of the storage."""

    filename = serializers.CharField()
    s3_key = serializers.CharField(help_text="Its key in the storage (`<schema>/<file>`).")
    size = serializers.IntegerField(help_text="Bytes.")
    last_modified = serializers.DateTimeField()
    storage_class = serializers.CharField(allow_blank=True)


class CloudListSerializer(serializers.Serializer):
    """What the storage holds for the tenant."""

    count = serializers.IntegerField()
    schema = serializers.CharField()
    backups = CloudObjectSerializer(many=True)


class CloudKeySerializer(serializers.Serializer):
    """An object, by key."""

    s3_key = SafeCharField(max_length=4096, trim_whitespace=False, help_text=KEY_HELP)


class CloudUrlInputSerializer(CloudKeySerializer):
    """An object, and how long its link lives."""

    expiration = serializers.IntegerField(
        required=False, default=None, allow_null=True, min_value=1, max_value=7 * 24 * 3600,
        help_text="Seconds the link stays valid (default 3600, at most BACKUPS_URL_MAX_EXPIRY).")


class CloudUrlSerializer(serializers.Serializer):
    """A time-limited download link."""

    download_url = serializers.URLField()
    s3_key = serializers.CharField()
    expires_in_seconds = serializers.IntegerField()
    filename = serializers.CharField()


class CloudDeleteSerializer(MessageSerializer):
    """What cloud/delete/ did."""

    s3_key = serializers.CharField()
    record_deleted = serializers.BooleanField(help_text="Whether a backup record had this key and went too.")


class CloudListView(TenantAdminAPIView):
    """The tenant's backup objects in the storage."""

    @extend_schema(
        operation_id="backups_cloud_list",
        summary="List this tenant's objects in the backup storage",
        responses={200: CloudListSerializer, **errors(*ADMIN, *STORAGE)},
        tags=["cloud"],
    )
    def get(self, request):
        objects = api_cloud_list(tenant=self.tenant, storage=get_storage())
        return Response(CloudListSerializer({"count": len(objects), "schema": self.schema_name,
                                             "backups": objects}).data)


class CloudDownloadView(TenantAdminAPIView):
    """An object's bytes, streamed (and checked when its record or manifest gives a checksum)."""

    content_negotiation_class = AnyAcceptNegotiation

    @extend_schema(
        operation_id="backups_cloud_download",
        summary="Download an object of the backup storage by key",
        request=CloudKeySerializer,
        responses={
            (200, "application/octet-stream"): OpenApiResponse(BINARY, description="The object, streamed."),
            **errors(400, *ADMIN, 404, *STORAGE),
        },
        tags=["cloud"],
    )
    def post(self, request):
        body = CloudKeySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        key = api_cloud_key_parse(body.validated_data["s3_key"], tenant=self.tenant)
        storage = get_storage()
        record = api_cloud_record(storage=storage, key=key, tenant=self.tenant)
        opened = api_object_open(storage=storage, key=key, record=record)
        api_download_recorded(record=record, tenant=self.tenant, actor=self.actor(),
                              ip_address=self.ip(), via="cloud", key=key)
        return stream_response(opened)


class CloudDeleteView(TenantAdminAPIView):
    """Delete an object (and its manifest, and its record if one has this key)."""

    schema = DeleteWithBodyAutoSchema()

    @extend_schema(
        operation_id="backups_cloud_delete",
        summary="Delete an object of the backup storage by key",
        request=CloudKeySerializer,
        responses={200: CloudDeleteSerializer, **errors(400, *ADMIN, 404, 409, *STORAGE)},
        tags=["cloud"],
    )
    def delete(self, request):
        body = CloudKeySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        key = api_cloud_key_parse(body.validated_data["s3_key"], tenant=self.tenant)
        record_deleted = api_cloud_delete(key=key, tenant=self.tenant,
                                          actor=self.actor(), ip_address=self.ip(), storage=get_storage())
        return Response({"message": f"{key.rsplit('/', 1)[-1]} deleted.", "s3_key": key,
                         "record_deleted": record_deleted})


class CloudUrlView(TenantAdminAPIView):
    """A time-limited link to an object."""

    @extend_schema(
        operation_id="backups_cloud_get_url",
        summary="A time-limited download link to an object",
        request=CloudUrlInputSerializer,
        responses={200: CloudUrlSerializer, **errors(400, *ADMIN, 404, *STORAGE)},
        tags=["cloud"],
    )
    def post(self, request):
        body = CloudUrlInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        key = api_cloud_key_parse(body.validated_data["s3_key"], tenant=self.tenant)
        expires_in = body.validated_data.get("expiration") or backups_settings.BACKUPS_URL_DEFAULT_EXPIRY
        url = api_cloud_url(key=key, expires_in=expires_in, tenant=self.tenant, actor=self.actor(),
                            ip_address=self.ip(), storage=get_storage(), bound=link_binding(request))
        if url.startswith("/"):  # the local backend's signed link, served by this domain
            url = request.build_absolute_uri(url)
        return Response({"download_url": url, "s3_key": key, "expires_in_seconds": expires_in,
                         "filename": key.rsplit("/", 1)[-1]})
