"""The module is now `backups.ops.middleware`: this path is kept for one release, so that
`"backups.middleware.HealthProbeMiddleware"` in MIDDLEWARE still works.
"""

from backups.ops.middleware import HealthProbeMiddleware

__all__ = ["HealthProbeMiddleware"]
