"""The OpenAPI schema view: built once per process and kept rendered, so an anonymous request costs nothing.

drf-spectacular builds the schema on every request (about 0.5 s of CPU under load) and, in a fresh process,
concurrent first builds race in its extension loading and answer 500s. The schema depends only on the code
(the same URL conf on every tenant domain, no per-request filtering: SERVE_PUBLIC), so one build under a lock,
and one rendering per format, serve every later request; a throttle per tenant and address bounds the rest.
"""

from __future__ import annotations

import threading

from django.conf import settings
from django.http import HttpResponse
from django.utils import translation
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SCHEMA_KWARGS, SpectacularAPIView

from .throttling import TenantSchemaRateThrottle


class CachedSchemaView(SpectacularAPIView):
    """SpectacularAPIView with its schema built once per process (per URL conf, version and language).

    Only `?lang=` values of settings.LANGUAGES and the view's own `api_version` or the request's negotiated
    version count, so the cache cannot be grown by made-up query strings.
    """

    throttle_classes = (TenantSchemaRateThrottle,)
    _lock = threading.Lock()
    _rendered: dict[tuple, tuple[bytes, str]] = {}
    _schemas: dict[tuple, dict] = {}

    @extend_schema(**SCHEMA_KWARGS)
    def get(self, request, *args, **kwargs) -> HttpResponse:
        lang = request.GET.get("lang")
        if lang not in dict(settings.LANGUAGES):
            lang = translation.get_language()
        with translation.override(lang):
            return self._cached_response(request)

    def _cached_response(self, request) -> HttpResponse:
        version = self.api_version or request.version
        urlconf = self.urlconf or getattr(request, "urlconf", None) or settings.ROOT_URLCONF
        key = (str(urlconf), version, translation.get_language())
        renderer, media_type = request.accepted_renderer, request.accepted_media_type
        with self._lock:
            if key not in self._schemas:
                generator = self.generator_class(urlconf=self.urlconf, api_version=version, patterns=self.patterns)
                self._schemas[key] = generator.get_schema(request=request, public=self.serve_public)
            rendered_key = (*key, renderer.format, media_type)
            if rendered_key not in self._rendered:
                body = renderer.render(self._schemas[key], media_type, {"request": request, "view": self})
                content_type = f"{media_type}; charset={renderer.charset}" if renderer.charset else media_type
                self._rendered[rendered_key] = (body, content_type)
        body, content_type = self._rendered[rendered_key]
        response = HttpResponse(body, content_type=content_type)
        response["Content-Disposition"] = f'inline; filename="{self._get_filename(request, version)}"'
        return response
