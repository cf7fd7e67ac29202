"""The module is now `backups.ops.urls`: this path is kept for one release, so that
`include("backups.ops_urls")` still works.
"""

from backups.ops.urls import app_name, urlpatterns

__all__ = ["app_name", "urlpatterns"]
