"""Request throttles whose cache keys include the tenant (user ids repeat across tenants' schemas).

Rates come from BACKUPS_API_THROTTLE_RATES and the client's address from BACKUPS_API_NUM_PROXIES (through
backups.conf), so they hold whatever the host's REST_FRAMEWORK says; counts live in Django's default cache,
which must be shared by every web process (a Redis cache) for the limits to mean anything.
"""

from __future__ import annotations

from rest_framework.throttling import AnonRateThrottle, SimpleRateThrottle, UserRateThrottle

from backups import conf
from backups.conf import backups_settings

from .tokens import current_schema


def client_ident(request) -> str:
    """The client's address: REMOTE_ADDR, or the X-Forwarded-For entry added by the nearest trusted proxy."""
    remote = request.META.get("REMOTE_ADDR") or ""
    proxies = backups_settings.BACKUPS_API_NUM_PROXIES or 0
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if proxies <= 0 or not forwarded:
        return remote
    addrs = [a.strip() for a in forwarded.split(",") if a.strip()]
    return addrs[-min(proxies, len(addrs))] if addrs else remote


def tenant_key(throttle: SimpleRateThrottle, request, ident: str) -> str:
    """`throttle_<scope>_<schema>:<ident>`."""
    return throttle.cache_format % {"scope": throttle.scope, "ident": f"{current_schema(request)}:{ident}"}


class _ConfRate:
    """The rate of the throttle's scope from BACKUPS_API_THROTTLE_RATES (defaults per scope)."""

    scope: str

    def get_rate(self) -> str | None:
        rates = {**conf.DEFAULTS["BACKUPS_API_THROTTLE_RATES"], **(backups_settings.BACKUPS_API_THROTTLE_RATES or {})}
        return rates.get(self.scope)

    def get_ident(self, request) -> str:
        return client_ident(request)


class TenantAnonRateThrottle(_ConfRate, AnonRateThrottle):
    """Anonymous requests, per tenant and client address."""

    def get_cache_key(self, request, view):
        if request.user and request.user.is_authenticated:
            return None
        return tenant_key(self, request, self.get_ident(request))


class TenantUserRateThrottle(_ConfRate, UserRateThrottle):
    """Authenticated requests, per tenant and user (anonymous ones per address)."""

    def get_cache_key(self, request, view):
        if request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"addr:{self.get_ident(request)}"
        return tenant_key(self, request, ident)


class TenantAuthRateThrottle(_ConfRate, SimpleRateThrottle):
    """Credential checks (token and JWT endpoints), per tenant and client address: slows password guessing."""

    scope = "auth"

    def get_cache_key(self, request, view):
        return tenant_key(self, request, self.get_ident(request))


class TenantSchemaRateThrottle(_ConfRate, SimpleRateThrottle):
    """The OpenAPI schema (public, for /api/docs/), per tenant and client address, whoever asks."""

    scope = "schema"

    def get_cache_key(self, request, view):
        return tenant_key(self, request, self.get_ident(request))
