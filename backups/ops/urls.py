"""URLs of the ops views, for a project's public (ops) domain: `path("", include("backups.ops.urls"))`.

The probes are listed too for projects without HealthProbeMiddleware; with it they are answered before
these URLs are reached, on every host.
"""

from django.urls import path

from backups.ops import views as ops_views

app_name = "backups_ops"

urlpatterns = [
    path("metrics", ops_views.metrics, name="metrics"),
    path("healthz", ops_views.healthz, name="healthz"),
    path("readyz", ops_views.readyz, name="readyz"),
]
