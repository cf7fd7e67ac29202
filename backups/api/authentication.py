"""Authentication bound to the tenant whose domain serves the request.

Users and tokens live in each tenant's schema, and user ids repeat across tenants (user 1 exists in
every clinic). A DRF token is looked up in the current schema only, so another tenant's token simply
does not exist here. A JWT signs a user id and the `schema` it was issued for; it is refused on any
other tenant's domain.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import connection
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.settings import api_settings as jwt_settings

SCHEMA_CLAIM = "schema"
TOKEN_KEY_RE = re.compile(r"^[0-9a-f]{40}$")


def current_schema(request) -> str:
    """The schema of the tenant serving this request."""
    tenant = getattr(request, "tenant", None)
    return getattr(tenant, "schema_name", None) or connection.schema_name


class TenantTokenAuthentication(TokenAuthentication):
    """`Authorization: Token <key>`, the key looked up in this tenant's schema (keys are 40 hex digits)."""

    def authenticate_credentials(self, key: str):
        if not TOKEN_KEY_RE.fullmatch(key or ""):
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        return super().authenticate_credentials(key)


class TenantJWTAuthentication(JWTAuthentication):
    """`Authorization: Bearer <jwt>`, accepted only on the domain of the tenant it was issued for."""

    def authenticate(self, request):
        header = self.get_header(request)
        if header is None:
            return None
        raw_token = self.get_raw_token(header)
        if raw_token is None:
            return None
        validated_token = self.get_validated_token(raw_token)
        if validated_token.get(SCHEMA_CLAIM) != current_schema(request):
            raise InvalidToken(_("This token was not issued for this clinic."))
        return self.get_user(validated_token), validated_token

    def get_user(self, validated_token):
        try:
            user_id = validated_token[jwt_settings.USER_ID_CLAIM]
        except KeyError:
            raise InvalidToken(_("Token contained no recognizable user identification")) from None
        try:
            user = self.user_model.objects.filter(**{jwt_settings.USER_ID_FIELD: user_id}).first()
        except (ValueError, TypeError, DjangoValidationError):
            user = None
        if user is None or not user.is_active:
            raise exceptions.AuthenticationFailed(_("User not found or inactive."), code="user_not_found")
        return user
