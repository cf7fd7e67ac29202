"""Anonymous work is bounded: the OpenAPI schema is built once per process and throttled, an oversized body is
a 413, not a bug."""

from __future__ import annotations

import json
import threading

import pytest
import requests
from drf_spectacular.generators import SchemaGenerator

from .conftest import api_client
from .web_server import procfile_web


@pytest.fixture
def fresh_schema_cache():
    """As in a process that has not served the schema yet."""
    from backups.api.schema_view import CachedSchemaView

    CachedSchemaView._schemas.clear()
    CachedSchemaView._rendered.clear()


def test_the_schema_is_built_once_per_process_whatever_the_tenant_or_format(fresh_schema_cache, monkeypatch):
    builds = []
    real = SchemaGenerator.get_schema
    monkeypatch.setattr(SchemaGenerator, "get_schema", lambda self, *a, **kw: builds.append(1) or real(self, *a, **kw))
    bodies = {}
    for schema in ("clinica_demo", "clinica_sonrisa", "clinica_demo"):
        for accept in ("application/json", "application/vnd.oai.openapi"):
            response = api_client(schema).get("/api/schema/", HTTP_ACCEPT=accept)
            assert response.status_code == 200, response.content[:300]
            bodies.setdefault(accept, set()).add(response.content)
    assert len(builds) == 1
    assert all(len(found) == 1 for found in bodies.values())  # every tenant gets the same schema
    assert "/api/backups/history/" in json.loads(bodies["application/json"].pop())["paths"]


def test_the_schema_is_throttled_per_address_and_the_docs_page_still_loads(settings):
    settings.BACKUPS_API_THROTTLE_RATES = {**settings.BACKUPS_API_THROTTLE_RATES, "schema": "3/min"}
    client = api_client("clinica_demo")
    statuses = [client.get("/api/schema/", HTTP_ACCEPT="application/json").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert int(refused["Retry-After"]) > 0 and "throttled" in refused.json()["detail"]
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()
    assert api_client("clinica_sonrisa").get("/api/schema/").status_code == 200  # another tenant's own budget


def test_concurrent_first_requests_of_a_fresh_web_process_all_succeed(django_db_setup):  # noqa: F811
    """drf-spectacular's extension loading raced when a new process built its first schemas concurrently."""
    with procfile_web("test-schema-race.log", WEB_CONCURRENCY="1", GUNICORN_THREADS="8") as base:
        barrier, statuses = threading.Barrier(8), []

        def fetch() -> None:
            barrier.wait()
            response = requests.get(f"{base}/api/schema/", headers={"Host": "demo.localhost",
                                                                     "Accept": "application/json"}, timeout=30)
            statuses.append(response.status_code)

        threads = [threading.Thread(target=fetch) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert statuses == [200] * 8


def test_a_body_over_the_upload_limit_is_a_413_in_json(caplog):
    body = json.dumps({"username": "admin@clinica_demo", "password": "x" * (5 << 19)})  # 2.5 MB
    response = api_client("clinica_demo").post("/api/auth/token/", body, content_type="application/json")
    assert response.status_code == 413, response.content[:300]
    assert response["Content-Type"] == "application/json"
    assert "too large" in response.json()["detail"]
    assert not [r for r in caplog.records if r.levelname == "ERROR"]  # bad input, not a bug
