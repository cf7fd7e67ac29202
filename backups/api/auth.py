"""Kept for one release: host projects that `include("backups.api.auth")` get the auth endpoints' URLs, now in
backups.api.auth_urls (the views are in backups.api.views.auth)."""

from backups.api.auth_urls import urlpatterns  # noqa: F401 - re-export
