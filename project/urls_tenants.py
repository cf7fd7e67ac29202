"""URLs served on each tenant's own domain: the backups API, its auth endpoints and its OpenAPI schema."""

from django.http import JsonResponse
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularSwaggerView

from backups.api.schema_view import CachedSchemaView


def api_not_found(request, *args, **kwargs) -> JsonResponse:
    """Any other /api/ path: the API's JSON 404, never an HTML page."""
    return JsonResponse({"detail": "Not found."}, status=404)


urlpatterns = [
    path("api/backups/", include("backups.api.urls")),
    path("api/auth/", include("backups.api.auth_urls")),
    path("api/schema/", CachedSchemaView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    re_path(r"^api/", api_not_found),
]
