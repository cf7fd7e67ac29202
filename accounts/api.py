"""Auth endpoints on each clinic's domain: a DRF token, or a JWT pair bound to the clinic (its `schema` claim).

Users live in the clinic's schema, so credentials are checked there; a JWT carries the schema it was
issued for and is refused on any other clinic's domain (see backups.api.authentication).
"""

from __future__ import annotations

from django.contrib.auth import authenticate, get_user_model
from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer, TokenRefreshSerializer
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from backups.api.authentication import SCHEMA_CLAIM, current_schema
from backups.api.schema import errors
from backups.api.serializers import SafeCharField
from backups.api.throttling import TenantAuthRateThrottle

BAD_CREDENTIALS = "No active account of this clinic with these credentials."


class CredentialsSerializer(serializers.Serializer):
    """A user of this clinic and their password."""

    username = SafeCharField(max_length=150)
    password = SafeCharField(max_length=4096, trim_whitespace=False, write_only=True, style={"input_type": "password"})


class TokenSerializer(serializers.Serializer):
    """A DRF token: send it as `Authorization: Token <token>` to this clinic's domain."""

    token = serializers.CharField()


class JwtPairSerializer(serializers.Serializer):
    """A JWT pair for this clinic: `Authorization: Bearer <access>`; refresh at /api/auth/jwt/refresh/."""

    access = serializers.CharField()
    refresh = serializers.CharField()


class JwtRefreshInputSerializer(serializers.Serializer):
    """A refresh token issued on this clinic's domain."""

    refresh = SafeCharField(max_length=4096)


class JwtAccessSerializer(serializers.Serializer):
    """A new access token."""

    access = serializers.CharField()


def _active_user(request, username: str, password: str):
    user = authenticate(request=request, username=username, password=password)
    if user is None or not user.is_active:
        raise AuthenticationFailed(BAD_CREDENTIALS, code="no_active_account")
    return user


class _AuthView(APIView):
    authentication_classes = ()
    permission_classes = (AllowAny,)
    throttle_classes = (TenantAuthRateThrottle,)

    def get_authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'


AUTH_ERRORS = errors(400, 401, 429)


class ObtainTokenView(_AuthView):
    """Exchange a username and password for this clinic's DRF token."""

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
    """simplejwt's pair, with the clinic's schema in both tokens."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields[self.username_field] = SafeCharField(max_length=150, write_only=True)
        self.fields["password"] = SafeCharField(max_length=4096, trim_whitespace=False, write_only=True)

    def validate(self, attrs):
        request = self.context["request"]
        self.user = _active_user(request, attrs[self.username_field], attrs["password"])
        refresh = self.get_token(self.user)
        refresh[SCHEMA_CLAIM] = current_schema(request)
        return {"refresh": str(refresh), "access": str(refresh.access_token)}


class TenantTokenRefreshSerializer(TokenRefreshSerializer):
    """A new access token, only from a refresh token of this clinic whose user is still active here."""

    refresh = SafeCharField(max_length=4096)

    def validate(self, attrs):
        refresh = RefreshToken(attrs["refresh"])
        if refresh.get(SCHEMA_CLAIM) != current_schema(self.context["request"]):
            raise InvalidToken("This token was not issued for this clinic.")
        user_id = refresh.payload.get(jwt_settings.USER_ID_CLAIM)
        try:
            user = get_user_model().objects.filter(**{jwt_settings.USER_ID_FIELD: user_id}).first()
        except (ValueError, TypeError):
            user = None
        if user is None or not user.is_active:
            raise AuthenticationFailed("No active account found for the given token.", code="no_active_account")
        return {"access": str(refresh.access_token)}


class ObtainJwtView(TokenObtainPairView):
    """Exchange a username and password for a JWT pair bound to this clinic."""

    serializer_class = TenantTokenObtainPairSerializer
    throttle_classes = (TenantAuthRateThrottle,)

    @extend_schema(operation_id="auth_jwt_create", summary="Get a JWT pair", request=CredentialsSerializer,
                   responses={200: JwtPairSerializer, **AUTH_ERRORS}, auth=[], tags=["auth"])
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)


class RefreshJwtView(TokenRefreshView):
    """A new access token from a refresh token of this clinic."""

    serializer_class = TenantTokenRefreshSerializer
    throttle_classes = (TenantAuthRateThrottle,)

    @extend_schema(operation_id="auth_jwt_refresh", summary="Refresh a JWT access token",
                   request=JwtRefreshInputSerializer,
                   responses={200: JwtAccessSerializer, **AUTH_ERRORS}, auth=[], tags=["auth"])
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)  # a bad or expired token: simplejwt answers 401


urlpatterns = [
    path("token/", ObtainTokenView.as_view(), name="auth-token"),
    path("jwt/", ObtainJwtView.as_view(), name="auth-jwt"),
    path("jwt/refresh/", RefreshJwtView.as_view(), name="auth-jwt-refresh"),
]
