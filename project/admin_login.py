"""Failed logins of the Django admin, counted in the shared cache by django-axes, and nothing else.

axes counts every `authenticate()` failure; the API's token and JWT logins also call it, on tenant domains, for
users of the tenant's schema. Those have their own throttle (backups.api.throttling.TenantAuthRateThrottle) and
must never be turned into axes' lockout page, nor add to an operator's count, so this handler records only
requests of the admin site (AXES_ONLY_ADMIN_SITE already limits the lockout itself to it).
"""

from __future__ import annotations

from axes.handlers.cache import AxesCacheHandler


class AdminLoginCacheHandler(AxesCacheHandler):
    """axes' cache handler (counts in Redis, so every web process sees them), for admin-site requests only."""

    def user_login_failed(self, sender, credentials: dict, request=None, **kwargs) -> None:
        if request is not None and self.is_admin_request(request):
            super().user_login_failed(sender, credentials, request=request, **kwargs)

    def user_logged_in(self, sender, request, user, **kwargs) -> None:
        if request is not None and self.is_admin_request(request):
            super().user_logged_in(sender, request, user, **kwargs)

    def user_logged_out(self, sender, request, user, **kwargs) -> None:
        if request is not None and self.is_admin_request(request):
            super().user_logged_out(sender, request, user, **kwargs)
