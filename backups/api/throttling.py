"""Request throttles whose cache keys include the tenant: user ids repeat across tenants' schemas."""

from __future__ import annotations

from rest_framework.throttling import AnonRateThrottle, SimpleRateThrottle, UserRateThrottle

from .authentication import current_schema


def tenant_key(throttle: SimpleRateThrottle, request, ident: str) -> str:
    """`throttle_<scope>_<schema>:<ident>`."""
    return throttle.cache_format % {"scope": throttle.scope, "ident": f"{current_schema(request)}:{ident}"}


class TenantAnonRateThrottle(AnonRateThrottle):
    """Anonymous requests, per tenant and client address."""

    def get_cache_key(self, request, view):
        if request.user and request.user.is_authenticated:
            return None
        return tenant_key(self, request, self.get_ident(request))


class TenantUserRateThrottle(UserRateThrottle):
    """Authenticated requests, per tenant and user (anonymous ones per address)."""

    def get_cache_key(self, request, view):
        if request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"addr:{self.get_ident(request)}"
        return tenant_key(self, request, ident)


class TenantAuthRateThrottle(SimpleRateThrottle):
    """Credential checks (token and JWT endpoints), per tenant and client address: slows password guessing."""

    scope = "auth"

    def get_cache_key(self, request, view):
        return tenant_key(self, request, self.get_ident(request))
