"""The API's auth endpoints, mounted at /api/auth/ on tenant domains: `include("backups.api.auth_urls")`."""

from django.urls import path

from .views.auth import LogoutView, ObtainJwtView, ObtainTokenView, RefreshJwtView

urlpatterns = [
    path("token/", ObtainTokenView.as_view(), name="auth-token"),
    path("jwt/", ObtainJwtView.as_view(), name="auth-jwt"),
    path("jwt/refresh/", RefreshJwtView.as_view(), name="auth-jwt-refresh"),
    path("logout/", LogoutView.as_view(), name="auth-logout"),
]
