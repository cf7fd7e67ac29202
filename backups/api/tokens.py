"""JWTs bound to one tenant identity and to its user's current credentials, rotated and revocable.

A JWT pair carries three bindings besides simplejwt's user id:
- `schema` and `tenant_uid`: the tenant it was issued for. Schema names are reused after a tenant is
  deleted; `tenant_uid` never is, so a token of a deleted tenant is refused by a later one of the same name.
- `cred`: a keyed fingerprint of the user's password hash. Changing the password (by any path, even a
  queryset update) changes the fingerprint, so every token issued before stops working at once.
- `sid`: the session, the first refresh token's id, kept across rotations. Logging out blacklists the
  refresh token and records the session as revoked in the shared cache for an access token's lifetime,
  so that session's access tokens stop working too.

Refresh tokens rotate: each use blacklists the one presented (under a row lock, so two concurrent uses
of one token cannot both succeed) and answers a new one.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import connection, transaction
from django.utils.crypto import constant_time_compare, salted_hmac
from rest_framework import exceptions
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken, Token

SCHEMA_CLAIM = "schema"
TENANT_CLAIM = "tenant_uid"
CREDENTIAL_CLAIM = "cred"
SESSION_CLAIM = "sid"
NOT_THIS_TENANT = "This token was not issued for this tenant."
INHERITED = ("This account belongs to an earlier tenant of this schema name, not to this one: ask the host to "
             "create your account again.")
REVOKED = "This token was revoked: log in again."


def current_tenant(request) -> Any:
    """The tenant serving this request (django-tenants' middleware sets it)."""
    return getattr(request, "tenant", None) or getattr(connection, "tenant", None)


def current_schema(request) -> str:
    """The schema of the tenant serving this request."""
    return getattr(current_tenant(request), "schema_name", None) or connection.schema_name


def _tenant_uid(tenant: Any) -> str:
    return str(getattr(tenant, "tenant_uid", "") or "")


def credential_fingerprint(user: Any) -> str:
    """A keyed digest of the user's password hash and active flag: changes when either changes."""
    state = f"{user.password}|{int(bool(getattr(user, 'is_active', True)))}"
    return salted_hmac("backups.api.tokens.credential", state, algorithm="sha256").hexdigest()[:32]


def issue_pair(user: Any, tenant: Any) -> RefreshToken:
    """A refresh token (its `.access_token` is the access one) bound to this tenant and these credentials."""
    refresh = RefreshToken.for_user(user)
    refresh[SCHEMA_CLAIM] = tenant.schema_name
    refresh[TENANT_CLAIM] = _tenant_uid(tenant)
    refresh[CREDENTIAL_CLAIM] = credential_fingerprint(user)
    refresh[SESSION_CLAIM] = refresh[jwt_settings.JTI_CLAIM]
    return refresh


def _session_key(sid: str) -> str:
    return f"backups:jwt-revoked:{sid}"


def check_tenant(token: Token, request) -> None:
    """Refuse a token issued for another tenant, or for an earlier tenant of the same schema name."""
    tenant = current_tenant(request)
    uid = _tenant_uid(tenant)
    if token.get(SCHEMA_CLAIM) != current_schema(request) or not uid or token.get(TENANT_CLAIM) != uid:
        raise InvalidToken(NOT_THIS_TENANT)


def refuse_inherited(user: Any, request) -> None:
    """401 for a user the tenant's schema held before the tenant was created (backups.InheritedUser): an
    earlier tenant's account, whose password and tokens must not open a later tenant of the same name."""
    from backups.services.tenant_lifecycle import tenant_user_inherited

    if tenant_user_inherited(tenant=current_tenant(request), user=user):
        raise exceptions.AuthenticationFailed(INHERITED, code="inherited_account")


def token_user(token: Token) -> Any:
    """The active user the token names whose credentials are those it was issued with; else 401."""
    user_id = token.get(jwt_settings.USER_ID_CLAIM)
    try:
        user = get_user_model().objects.filter(**{jwt_settings.USER_ID_FIELD: user_id}).first()
    except (ValueError, TypeError, DjangoValidationError):
        user = None
    if user is None or not user.is_active:
        raise exceptions.AuthenticationFailed("User not found or inactive.", code="user_not_found")
    if not constant_time_compare(str(token.get(CREDENTIAL_CLAIM, "")), credential_fingerprint(user)):
        raise exceptions.AuthenticationFailed(REVOKED, code="token_revoked")
    sid = token.get(SESSION_CLAIM)
    if not sid or cache.get(_session_key(str(sid))):
        raise exceptions.AuthenticationFailed(REVOKED, code="token_revoked")
    return user


def _locked_unused(refresh: RefreshToken) -> OutstandingToken:
    """The outstanding row of this refresh token, locked; refuses one already used or revoked."""
    jti = refresh[jwt_settings.JTI_CLAIM]
    row = OutstandingToken.objects.select_for_update().filter(jti=jti).first()
    if row is None:
        raise InvalidToken(REVOKED)
    if BlacklistedToken.objects.filter(token=row).exists():
        raise InvalidToken(REVOKED)
    return row


def rotate(raw_refresh: str, request) -> dict[str, str]:
    """A new access token and a new refresh token; the presented refresh token is used up."""
    refresh = RefreshToken(raw_refresh)
    check_tenant(refresh, request)
    token_user(refresh)
    with transaction.atomic():
        BlacklistedToken.objects.create(token=_locked_unused(refresh))
        refresh.set_jti()
        refresh.set_exp()
        refresh.set_iat()
        refresh.outstand()
    return {"access": str(refresh.access_token), "refresh": str(refresh)}


def log_out(raw_refresh: str, request) -> None:
    """Blacklist this refresh token and revoke its session's access tokens for their lifetime."""
    refresh = RefreshToken(raw_refresh)
    check_tenant(refresh, request)
    token_user(refresh)
    with transaction.atomic():
        BlacklistedToken.objects.create(token=_locked_unused(refresh))
    lifetime = int(jwt_settings.ACCESS_TOKEN_LIFETIME.total_seconds()) + 60
    cache.set(_session_key(str(refresh[SESSION_CLAIM])), 1, timeout=lifetime)
