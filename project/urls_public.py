"""URLs served on the public (ops) domain: the Django admin, and the metrics and probes of the backups app."""

from django.contrib import admin
from django.urls import include, path

admin.autodiscover()  # SimpleAdminConfig (settings): the admin modules are imported here, where the admin is served

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("backups.ops.urls")),
]
