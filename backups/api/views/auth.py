"""Auth endpoints on each tenant's domain: a DRF token, or a JWT pair bound to the tenant's identity; logout.

Users live in the tenant's schema, so credentials are checked there; a JWT carries the tenant's identity
and the user's credential fingerprint and is refused on any other tenant's domain, after a password
change, and after logout (see backups.api.tokens). Refresh tokens rotate and are used once.
"""

from __future__ import annotations

from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer, TokenRefreshSerializer
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from .. import tokens
from ..defaults import ApiDefaults
from ..schema import errors
from ..serializers import SafeCharField
from ..throttling import TenantAuthRateThrottle

BAD_CREDENTIALS = "No active account of this tenant with these credentials."


class CredentialsSerializer(serializers.Serializer):
    """A user of this tenant and their password."""

    username = SafeCharField(max_length=150)
    password = SafeCharField(max_length=4096, trim_whitespace=False, write_only=True, style={"input_type": "password"})


class TokenSerializer(serializers.Serializer):
    """A DRF token: send it as `Authorization: Token <token>` to this tenant's domain."""

    token = serializers.CharField()


class JwtPairSerializer(serializers.Serializer):
    """A JWT pair for this tenant: `Authorization: Bearer <access>`; refresh at /api/auth/jwt/refresh/."""

    access = serializers.CharField()
    refresh = serializers.CharField()


class JwtRefreshInputSerializer(serializers.Serializer):
    """A refresh token issued on this tenant's domain."""

    refresh = SafeCharField(max_length=4096)


class LogoutSerializer(serializers.Serializer):
    """The refresh token of the JWT session to end (a DRF token is ended by sending it as the credential)."""

    refresh = SafeCharField(max_length=4096, required=False)


def _active_user(request, username: str, password: str):
    user = authenticate(request=request, username=username, password=password)
    if user is None or not user.is_active:
        raise AuthenticationFailed(BAD_CREDENTIALS, code="no_active_account")
    tokens.refuse_inherited(user, request)
    return user


class _AuthView(ApiDefaults, APIView):
    authentication_classes = ()
    permission_classes = (AllowAny,)
    throttle_classes = (TenantAuthRateThrottle,)

    def get_authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'


AUTH_ERRORS = errors(400, 401, 429)


class ObtainTokenView(_AuthView):
    """Exchange a username and password for this tenant's DRF token."""

    @extend_schema(operation_id="auth_token_create", summary="Get a DRF token", request=CredentialsSerializer,
                   responses={200: TokenSerializer, **AUTH_ERRORS}, auth=[], tags=["auth"])
    def post(self, request):
        body = CredentialsSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        user = _active_user(request, body.validated_data["username"], body.validated_data["password"])
        token, _ = Token.objects.get_or_create(user=user)
        return Response({"token": token.key})

    def get_authenticate_header(self, request) -> str:
        return 'Token realm="api"'


class TenantTokenObtainPairSerializer(TokenObtainPairSerializer):
    """simplejwt's pair, with the tenant's schema in both tokens."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields[self.username_field] = SafeCharField(max_length=150, write_only=True)
        self.fields["password"] = SafeCharField(max_length=4096, trim_whitespace=False, write_only=True)

    def validate(self, attrs):
        request = self.context["request"]
        self.user = _active_user(request, attrs[self.username_field], attrs["password"])
        refresh = tokens.issue_pair(self.user, tokens.current_tenant(request))
        return {"refresh": str(refresh), "access": str(refresh.access_token)}


class TenantTokenRefreshSerializer(TokenRefreshSerializer):
    """A new pair, only from an unused refresh token of this tenant whose user and password are unchanged."""

    refresh = SafeCharField(max_length=4096)

    def validate(self, attrs):
        return tokens.rotate(attrs["refresh"], self.context["request"])


class ObtainJwtView(ApiDefaults, TokenObtainPairView):
    """Exchange a username and password for a JWT pair bound to this tenant."""

    serializer_class = TenantTokenObtainPairSerializer
    authentication_classes = ()
    throttle_classes = (TenantAuthRateThrottle,)

    @extend_schema(operation_id="auth_jwt_create", summary="Get a JWT pair", request=CredentialsSerializer,
                   responses={200: JwtPairSerializer, **AUTH_ERRORS}, auth=[], tags=["auth"])
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)


class RefreshJwtView(ApiDefaults, TokenRefreshView):
    """A new JWT pair from a refresh token of this tenant; the one sent is used up (rotation)."""

    serializer_class = TenantTokenRefreshSerializer
    authentication_classes = ()
    throttle_classes = (TenantAuthRateThrottle,)

    @extend_schema(operation_id="auth_jwt_refresh", summary="Refresh a JWT pair",
                   request=JwtRefreshInputSerializer,
                   responses={200: JwtPairSerializer, **AUTH_ERRORS}, auth=[], tags=["auth"])
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)  # a bad, expired or used token: simplejwt answers 401


class LogoutView(ApiDefaults, APIView):
    """End a session: the refresh token sent is blacklisted and its access tokens stop working; a DRF
    token sent as the credential is deleted."""

    permission_classes = (AllowAny,)
    throttle_classes = (TenantAuthRateThrottle,)

    @extend_schema(operation_id="auth_logout", summary="Log out", request=LogoutSerializer,
                   responses={204: None, **AUTH_ERRORS}, tags=["auth"])
    def post(self, request):
        body = LogoutSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        refresh = body.validated_data.get("refresh")
        drf_token = request.auth if isinstance(request.auth, Token) else None
        if refresh is None and drf_token is None:
            raise serializers.ValidationError({"refresh": ["Send the refresh token of the session to end."]})
        if refresh is not None:
            try:
                tokens.log_out(refresh, request)
            except TokenError as exc:
                raise InvalidToken(exc.args[0]) from exc
        if drf_token is not None:
            drf_token.delete()
        return Response(status=204)
