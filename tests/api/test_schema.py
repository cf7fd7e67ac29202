"""The OpenAPI schema: served on clinic domains, complete, and built without touching a clinic's data."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext
from drf_spectacular.generators import SchemaGenerator

from .conftest import api_client

OPERATIONS = {
    ("post", "/api/backups/create/"), ("get", "/api/backups/history/"), ("get", "/api/backups/history/{record_id}/"),
    ("delete", "/api/backups/history/{record_id}/"), ("get", "/api/backups/history/{record_id}/download/"),
    ("get", "/api/backups/history/{record_id}/files/"),
    ("post", "/api/backups/history/{record_id}/restore/"), ("post", "/api/backups/history/{record_id}/verify/"),
    ("post", "/api/backups/history/{record_id}/restore-objects/"),
    ("get", "/api/backups/restores/{job_id}/"), ("get", "/api/backups/cloud/list/"),
    ("post", "/api/backups/cloud/download/"), ("delete", "/api/backups/cloud/delete/"),
    ("post", "/api/backups/cloud/get-url/"), ("get", "/api/backups/schedule/"), ("put", "/api/backups/schedule/"),
    ("patch", "/api/backups/schedule/"), ("get", "/api/backups/audit/"),
    ("get", "/api/backups/local-download/{token}/"), ("post", "/api/auth/token/"), ("post", "/api/auth/jwt/"),
    ("post", "/api/auth/jwt/refresh/"), ("post", "/api/auth/logout/"),
}
NO_AUTH = {"/api/auth/token/", "/api/auth/jwt/", "/api/auth/jwt/refresh/", "/api/auth/logout/",
           "/api/backups/local-download/{token}/"}


def _schema():
    response = api_client("clinica_demo").get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    return response.json()


def test_schema_documents_every_operation_and_its_errors():
    schema = _schema()
    assert schema["openapi"].startswith("3.")
    found = {(method, path) for path, ops in schema["paths"].items() for method in ops if method != "parameters"}
    assert found == OPERATIONS
    for method, path in OPERATIONS:
        op = schema["paths"][path][method]
        codes = set(op["responses"])
        if path not in NO_AUTH:
            assert {"401", "429"} <= codes, (method, path, codes)
            assert op.get("security"), (method, path)
        for code, response in op["responses"].items():
            if code.startswith(("4", "5")):
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith(("/Error", "/ValidationError")), (method, path, code)
    error = schema["components"]["schemas"]["Error"]
    assert error["required"] == ["detail"]
    admin_only = [(m, p) for m, p in OPERATIONS if p not in NO_AUTH
                  and not (m == "get" and p in ("/api/backups/history/", "/api/backups/history/{record_id}/",
                                                "/api/backups/schedule/"))]
    for method, path in admin_only:
        assert "403" in schema["paths"][path][method]["responses"], (method, path)
    assert "409" in schema["paths"]["/api/backups/create/"]["post"]["responses"]
    assert "429" in schema["paths"]["/api/backups/create/"]["post"]["responses"]


def test_delete_bodies_are_in_the_schema():
    op = _schema()["paths"]["/api/backups/cloud/delete/"]["delete"]
    body = op["requestBody"]
    assert body["required"] is True
    ref = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert "s3_key" in _schema()["components"]["schemas"][ref]["required"]


def test_downloads_are_documented_as_binary():
    schema = _schema()
    for method, path in (("get", "/api/backups/history/{record_id}/download/"),
                         ("post", "/api/backups/cloud/download/"), ("post", "/api/backups/create/"),
                         ("get", "/api/backups/local-download/{token}/")):
        content = schema["paths"][path][method]["responses"]["200"]["content"]
        assert content["application/octet-stream"]["schema"] == {"type": "string", "format": "binary"}
    files = schema["paths"]["/api/backups/history/{record_id}/files/"]["get"]["responses"]["200"]["content"]
    assert files["application/x-tar"]["schema"] == {"type": "string", "format": "binary"}


def test_swagger_ui_is_served():
    response = api_client("clinica_demo").get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()


def test_generating_the_schema_queries_no_database():
    with CaptureQueriesContext(connection) as queries:
        schema = SchemaGenerator().get_schema(request=None, public=True)
    assert schema["paths"]
    assert len(queries) == 0, [q["sql"] for q in queries]
