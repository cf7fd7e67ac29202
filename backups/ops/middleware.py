"""Middleware of the backups app."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from backups.conf import backups_settings


class HealthProbeMiddleware:
    """Answer BACKUPS_HEALTHZ_PATH and BACKUPS_READYZ_PATH on any host, before anything else runs.

    Put it first in MIDDLEWARE, above django-tenants' TenantMainMiddleware: that one looks the host name up in
    the database, so behind it a liveness probe would fail with the database, and a load balancer probing the
    container's address (not a tenant's domain) would get 404. Probes carry no cookies or credentials, and
    the answers say nothing about tenants.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        from backups.ops import views as ops_views

        path = request.path_info.rstrip("/") or "/"
        if path == (backups_settings.BACKUPS_HEALTHZ_PATH or None):
            return ops_views.healthz(request)
        if path == (backups_settings.BACKUPS_READYZ_PATH or None):
            return ops_views.readyz(request)
        return self.get_response(request)
