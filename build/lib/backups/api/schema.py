"""OpenAPI pieces shared by every view: the error bodies, the error responses, the auth schemes."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    """Every error but bad input: one sentence saying what went wrong."""

    detail = serializers.CharField(help_text="What went wrong, in one sentence.")


class ValidationErrorSerializer(serializers.Serializer):
    """Bad input: `detail`, or one list of messages per invalid field (`{"field": ["message"]}`)."""

    detail = serializers.CharField(required=False, help_text="What went wrong, when it is not about one field.")


class MessageSerializer(serializers.Serializer):
    """A done action, in one sentence."""

    message = serializers.CharField()


ERROR_DESCRIPTIONS = {
    400: "Bad input: field errors, or `detail`.",
    401: "No credentials, or invalid ones (another tenant's token or JWT counts as invalid here).",
    403: "Authenticated, but this tenant's administrators only.",
    404: "Nothing of this tenant by that id or key (another tenant's objects look the same).",
    409: "The backup's state (queued, running, or another operation under way) forbids this now.",
    429: "Too many requests, or too many manual backups this hour; see Retry-After.",
    502: "The backup storage refused the request.",
    503: "The backup storage is unavailable; see Retry-After.",
}


def errors(*codes: int) -> dict:
    """Documented error responses (`{"detail": ...}`; 400 may carry field errors) for `extend_schema`."""
    return {
        code: OpenApiResponse(ValidationErrorSerializer if code == 400 else ErrorSerializer,
                              description=ERROR_DESCRIPTIONS[code])
        for code in codes
    }


AUTHED = (401, 429)  # any authenticated endpoint
ADMIN = (401, 403, 429)  # any admin endpoint
STORAGE = (502, 503)  # any endpoint that calls the storage
BINARY = OpenApiTypes.BINARY


class TenantJWTScheme(OpenApiAuthenticationExtension):
    """`Authorization: Bearer <jwt>` from /api/auth/jwt/, valid on the issuing tenant's domain only."""

    target_class = "backups.api.authentication.TenantJWTAuthentication"
    name = "jwtAuth"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(header_name="HTTP_AUTHORIZATION", token_prefix="Bearer",
                                                   bearer_format="JWT")


class DeleteWithBodyAutoSchema(AutoSchema):
    """Documents a DELETE request body (drf-spectacular leaves DELETE bodies out, even with extend_schema)."""

    def _get_request_body(self, direction="request"):
        if self.method != "DELETE":
            return super()._get_request_body(direction)
        self.method = "POST"  # spectacular only documents bodies of PUT, PATCH and POST
        try:
            return super()._get_request_body(direction)
        finally:
            self.method = "DELETE"
