"""Views ops and machines use: Prometheus metrics behind a bearer token, liveness and readiness probes."""

from __future__ import annotations

import hmac

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from backups.conf import backups_settings

PROBE_HEADERS = {"Cache-Control": "no-store"}


@never_cache
@require_http_methods(["GET", "HEAD"])
def metrics(request: HttpRequest) -> HttpResponse:
    """The fleet's metrics for Prometheus, to `Authorization: Bearer <BACKUPS_METRICS_TOKEN>` only.

    No token configured: metrics are off and the path answers 404, as if it did not exist. No or another
    scheme's credentials: 401 with a Bearer challenge; a wrong token: 403.
    """
    token = backups_settings.BACKUPS_METRICS_TOKEN
    if not token:
        return HttpResponse("Not found.\n", status=404, content_type="text/plain")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        response = HttpResponse("Bearer token required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return HttpResponse("Invalid token.\n", status=403, content_type="text/plain")
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    from backups.ops.metrics import render

    return HttpResponse(render(), content_type=CONTENT_TYPE_LATEST)


@require_http_methods(["GET", "HEAD"])
def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness: the process answers requests. Touches no dependency, so a database outage restarts nothing."""
    return JsonResponse({"status": "ok"}, headers=PROBE_HEADERS)


@require_http_methods(["GET", "HEAD"])
def readyz(request: HttpRequest) -> HttpResponse:
    """Readiness: database, broker and storage each answered within BACKUPS_HEALTH_TIMEOUT_SECONDS (200), or
    not (503); the JSON names each check's status and time. Checked at most once per BACKUPS_READYZ_CACHE_SECONDS."""
    from backups.ops.health import readiness_cached

    results = readiness_cached()
    ok = all(result.ok for result in results)
    body = {"status": "ok" if ok else "error", "checks": {result.name: result.as_dict() for result in results}}
    return JsonResponse(body, status=200 if ok else 503, headers=PROBE_HEADERS)
