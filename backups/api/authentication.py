"""Authentication bound to the tenant whose domain serves the request.

Users and tokens live in each tenant's schema, and user ids repeat across tenants (user 1 exists in
every tenant). A DRF token is looked up in the current schema only, so another tenant's token simply
does not exist here, and a user the schema held before this tenant existed (an earlier tenant's, kept by
auto_drop_schema = False) is refused with their token. A JWT is bound to the tenant's identity and its
user's credentials (see backups.api.tokens); it is refused on any other tenant's domain, after a password
change and after logout.
"""

from __future__ import annotations

import re

from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework_simplejwt.authentication import JWTAuthentication

from .tokens import SCHEMA_CLAIM, check_tenant, current_schema, refuse_inherited, token_user

__all__ = ["SCHEMA_CLAIM", "TenantJWTAuthentication", "TenantTokenAuthentication", "current_schema"]

TOKEN_KEY_RE = re.compile(r"^[0-9a-f]{40}$")


class TenantTokenAuthentication(TokenAuthentication):
    """`Authorization: Token <key>`, the key looked up in this tenant's schema (keys are 40 hex digits)."""

    def authenticate_credentials(self, key: str):
        if not TOKEN_KEY_RE.fullmatch(key or ""):
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        user, token = super().authenticate_credentials(key)
        refuse_inherited(user, None)
        return user, token


class TenantJWTAuthentication(JWTAuthentication):
    """`Authorization: Bearer <jwt>`, accepted only on the domain of the tenant identity it was issued for."""

    def authenticate(self, request):
        header = self.get_header(request)
        if header is None:
            return None
        raw_token = self.get_raw_token(header)
        if raw_token is None:
            return None
        validated_token = self.get_validated_token(raw_token)
        check_tenant(validated_token, request)
        return token_user(validated_token), validated_token

    def get_user(self, validated_token):
        return token_user(validated_token)
