"""/api/docs/ works offline: Swagger UI comes from the app's own static files (drf-spectacular-sidecar)."""

from __future__ import annotations

import re

from django.core.management import call_command
from django.test import Client

ASSET = re.compile(r'(?:src|href)="([^"]+)"')


def test_swagger_ui_references_only_local_static_files():
    response = Client(HTTP_HOST="demo.localhost").get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assets = ASSET.findall(html)
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in assets
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui.css" in assets
    assert all(a.startswith("/static/") for a in assets), assets
    assert "cdn." not in html and "https://" not in html and "http://" not in html


def test_collected_static_files_are_served_by_whitenoise(settings, tmp_path):
    """As under gunicorn: `collectstatic`, then WhiteNoise serves them (no runserver, no finders)."""
    settings.STATIC_ROOT = str(tmp_path / "static")
    settings.WHITENOISE_USE_FINDERS = False
    settings.WHITENOISE_AUTOREFRESH = False
    call_command("collectstatic", interactive=False, verbosity=0)
    client = Client(HTTP_HOST="demo.localhost")  # a new handler: WhiteNoise reads STATIC_ROOT as it starts
    assets = ASSET.findall(client.get("/api/docs/").content.decode())
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert body == (tmp_path / asset.lstrip("/")).read_bytes(), asset
    bundle = client.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert bundle["Content-Type"].startswith("text/javascript") or "javascript" in bundle["Content-Type"]
    assert Client(HTTP_HOST="localhost").get("/static/admin/css/base.css").status_code == 200  # the admin's too
