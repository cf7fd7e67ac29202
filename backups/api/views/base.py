"""What every view of the API shares: the tenant, the actor, the client's address, streamed downloads."""

from __future__ import annotations

import ipaddress

from django.http import StreamingHttpResponse
from django.utils.http import content_disposition_header
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.views import APIView

from backups.api.defaults import ApiDefaults
from backups.api.permissions import IsTenantAdmin, IsTenantUser
from backups.api.services.streaming import OpenedObject, api_object_chunks, api_object_headers
from backups.api.throttling import client_ident
from backups.backup.on_demand import actor_snapshot


class AnyAcceptNegotiation(DefaultContentNegotiation):
    """Downloads answer bytes (or a JSON error) whatever the client's Accept header says."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


def client_ip(request) -> str | None:
    """The client's address as DRF's throttles see it (X-Forwarded-For only behind NUM_PROXIES proxies)."""
    ident = (client_ident(request) or "").strip()
    try:
        return str(ipaddress.ip_address(ident))
    except ValueError:
        return None


class TenantAPIView(ApiDefaults, APIView):
    """A view of the tenant's backups, readable by any of its users."""

    permission_classes = (IsTenantUser,)

    @property
    def tenant(self):
        return self.request.tenant

    @property
    def schema_name(self) -> str:
        return self.request.tenant.schema_name

    def actor(self) -> dict:
        return actor_snapshot(self.request.user)

    def ip(self) -> str | None:
        return client_ip(self.request)


class TenantAdminAPIView(TenantAPIView):
    """A view that acts on the tenant's backups: its administrators only."""

    permission_classes = (IsTenantAdmin,)


def stream_response(opened: OpenedObject) -> StreamingHttpResponse:
    """The object as an attachment, streamed in chunks and checked against its SHA-256 on the way."""
    response = StreamingHttpResponse(api_object_chunks(opened), content_type="application/octet-stream")
    response["Content-Disposition"] = content_disposition_header(True, opened.file_name)
    response["Cache-Control"] = "no-store"
    response["X-Content-Type-Options"] = "nosniff"
    for name, value in api_object_headers(opened).items():
        response[name] = value
    return response
