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
of one token cannot both succeed) and answers a new one. A refresh token presented again after it was used
(stolen, or replayed by whoever holds a copy) ends its whole session: every refresh token of the same `sid`
is blacklisted and its access tokens stop, so neither the thief nor the owner goes on with it.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import connection, transaction
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac
from rest_framework import exceptions
from rest_framework_simplejwt.exceptions import InvalidToken, TokenBackendError, TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.state import token_backend
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
    from backups.catalog.tenant_lifecycle import tenant_user_inherited

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
    if not sid or session_revoked(str(sid)):
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


def session_revoked(sid: str) -> bool:
    """Whether the session was ended (logout, a replayed refresh token)."""
    return bool(cache.get(_session_key(sid)))


def _revoke_session(sid: str) -> None:
    """Record the session as ended in the shared cache, for as long as anything bound to it can live: its access
    tokens, and the signed download links minted in it (BACKUPS_URL_MAX_EXPIRY)."""
    from backups.conf import backups_settings

    lifetime = max(int(jwt_settings.ACCESS_TOKEN_LIFETIME.total_seconds()) + 60,
                   backups_settings.BACKUPS_URL_MAX_EXPIRY + 60)
    cache.set(_session_key(sid), 1, timeout=lifetime)


def _end_session(user_id: Any, sid: str) -> None:
    """Blacklist every outstanding refresh token of the session and revoke its access tokens."""
    rows = OutstandingToken.objects.filter(user_id=user_id, expires_at__gt=timezone.now()).exclude(
        blacklistedtoken__isnull=False)
    family = [row for row in rows if _sid_of(row.token) == sid]
    BlacklistedToken.objects.bulk_create([BlacklistedToken(token=row) for row in family], ignore_conflicts=True)
    _revoke_session(sid)


def _sid_of(raw: str) -> str | None:
    try:
        return token_backend.decode(raw, verify=False).get(SESSION_CLAIM)
    except TokenBackendError:
        return None


def _end_replayed_session(raw_refresh: str, request) -> None:
    """A refresh token that is genuine (signed, unexpired, this tenant's) but already used: end its session."""
    try:
        payload = token_backend.decode(raw_refresh, verify=True)
    except TokenBackendError:
        return
    if payload.get(TENANT_CLAIM) != _tenant_uid(current_tenant(request)) or not payload.get(SESSION_CLAIM):
        return
    row = OutstandingToken.objects.filter(jti=payload.get(jwt_settings.JTI_CLAIM)).first()
    if row is not None and BlacklistedToken.objects.filter(token=row).exists():
        _end_session(row.user_id, str(payload[SESSION_CLAIM]))


def rotate(raw_refresh: str, request) -> dict[str, str]:
    """A new access token and a new refresh token; the presented refresh token is used up.

    A refresh token used before (a replay) is refused and ends its whole session."""
    try:
        refresh = RefreshToken(raw_refresh)
    except TokenError:
        _end_replayed_session(raw_refresh, request)
        raise
    check_tenant(refresh, request)
    token_user(refresh)
    with transaction.atomic():
        row = OutstandingToken.objects.select_for_update().filter(jti=refresh[jwt_settings.JTI_CLAIM]).first()
        used = row is None or BlacklistedToken.objects.filter(token=row).exists()
        if not used:
            BlacklistedToken.objects.create(token=row)
            refresh.set_jti()
            refresh.set_exp()
            refresh.set_iat()
            refresh.outstand()
    if used:  # used a moment ago, by a concurrent request: a replay too
        if row is not None:
            _end_session(row.user_id, str(refresh[SESSION_CLAIM]))
        raise InvalidToken(REVOKED)
    return {"access": str(refresh.access_token), "refresh": str(refresh)}


def log_out(raw_refresh: str, request) -> None:
    """Blacklist this refresh token and revoke its session's access tokens for their lifetime."""
    refresh = RefreshToken(raw_refresh)
    check_tenant(refresh, request)
    token_user(refresh)
    with transaction.atomic():
        BlacklistedToken.objects.create(token=_locked_unused(refresh))
    _revoke_session(str(refresh[SESSION_CLAIM]))


def _drf_token_mark(key: str) -> str:
    return salted_hmac("backups.api.tokens.link", key, algorithm="sha256").hexdigest()[:32]


def link_binding(request) -> dict[str, str]:
    """What a signed download link minted by this request is bound to: the user, their credentials, and the
    credential that asked (a DRF token, or a JWT session). Logging out, deactivating the user or changing their
    password ends the link (see link_binding_valid)."""
    return link_binding_for(request.user, request.auth)


def link_binding_for(user: Any, auth: Any) -> dict[str, str]:
    """link_binding of a user and the credential they authenticated with (a DRF token or a JWT)."""
    from rest_framework.authtoken.models import Token as DrfToken

    if isinstance(auth, DrfToken):
        session = "t:" + _drf_token_mark(auth.key)
    elif isinstance(auth, Token) and auth.get(SESSION_CLAIM):
        session = "j:" + str(auth[SESSION_CLAIM])
    else:
        session = ""
    return {"u": str(user.pk), "c": credential_fingerprint(user), "s": session}


def link_binding_valid(binding: Any) -> bool:
    """Whether the user who minted a link is still active with the same credentials in this schema, and the
    credential they used still stands: their DRF token not deleted (logout, password change), or their JWT
    session not ended (logout, a replayed refresh token)."""
    from rest_framework.authtoken.models import Token as DrfToken

    if not isinstance(binding, dict) or not all(isinstance(binding.get(k), str) for k in ("u", "c", "s")):
        return False
    try:
        user = get_user_model().objects.filter(pk=binding["u"]).first()
    except (ValueError, TypeError, DjangoValidationError):
        return False
    if user is None or not user.is_active:
        return False
    if not constant_time_compare(binding["c"], credential_fingerprint(user)):
        return False
    kind, _, value = binding["s"].partition(":")
    if kind == "t":
        token = DrfToken.objects.filter(user_id=user.pk).first()
        return token is not None and constant_time_compare(value, _drf_token_mark(token.key))
    if kind == "j":
        return bool(value) and not session_revoked(value)
    return False
