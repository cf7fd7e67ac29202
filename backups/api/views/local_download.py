"""local-download/<token>/: the local backend's signed, expiring links (the signature is the credential), which
end with the session of the admin who minted them."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.permissions import AllowAny

from backups.api.schema import BINARY, STORAGE, errors
from backups.api.services.cloud import api_cloud_record
from backups.api.services.streaming import api_object_open
from backups.api.tokens import link_binding_valid
from backups.backup.on_demand import api_download_recorded
from backups.core.naming import check_tenant_key
from backups.core.service_errors import NotFoundError
from backups.storage import get_storage
from backups.storage.local import resolve_signed_link

from .base import AnyAcceptNegotiation, TenantAPIView, stream_response

NOT_FOUND = "This link is invalid or has expired."


class LocalDownloadView(TenantAPIView):
    """Serve a signed link of the local backend, for this tenant's objects only."""

    authentication_classes = ()
    permission_classes = (AllowAny,)
    content_negotiation_class = AnyAcceptNegotiation

    @extend_schema(
        operation_id="backups_local_download",
        summary="Download through a signed link (local storage)",
        description="What cloud/get-url/ answers with the local backend. No credentials: the signed, expiring "
                    "token is the authorization. A tampered, expired or another tenant's link answers 404.",
        parameters=[OpenApiParameter("token", OpenApiTypes.STR, OpenApiParameter.PATH)],
        responses={
            (200, "application/octet-stream"): OpenApiResponse(BINARY, description="The object, streamed."),
            **errors(404, 429, *STORAGE),
        },
        auth=[],
        tags=["cloud"],
    )
    def get(self, request, token):
        try:
            key, bound = resolve_signed_link(token)
            key = check_tenant_key(key, self.schema_name, self.tenant.tenant_uid)
        except Exception:  # bad signature, expired, malformed payload, another tenant's key
            raise NotFoundError(NOT_FOUND) from None
        if not link_binding_valid(bound):  # its minter logged out, was deactivated, changed password
            raise NotFoundError(NOT_FOUND)
        storage = get_storage("local")
        record = api_cloud_record(storage=storage, key=key, tenant=self.tenant)
        opened = api_object_open(storage=storage, key=key, record=record)
        api_download_recorded(record=record, tenant=self.tenant, actor={},
                              ip_address=self.ip(), via="signed_link", key=key)
        return stream_response(opened)
