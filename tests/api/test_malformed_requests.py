"""Requests no parser or file system can take answer a JSON 400, and a bug answers a logged JSON 500."""

from __future__ import annotations

import json
import logging

import pytest

from backups.storage import StorageError, get_storage
from tests.identities import prefix

CLOUD = [("post", "/api/backups/cloud/download/"), ("delete", "/api/backups/cloud/delete/"),
         ("post", "/api/backups/cloud/get-url/")]


def test_a_key_with_a_300_byte_file_name_is_400_json_on_local_storage(admin):
    key = prefix("clinica_demo") + "a" * 300 + ".sql.zst"
    for method, url in CLOUD:
        response = getattr(admin, method)(url, json.dumps({"s3_key": key}), content_type="application/json")
        assert response.status_code == 400, (url, response.status_code, response.content[:300])
        assert response["Content-Type"] == "application/json"
        assert "255 bytes" in response.json()["s3_key"][0]


def test_a_local_storage_refuses_a_file_name_no_file_system_holds():
    with pytest.raises(StorageError, match="longer than 255 bytes"):
        get_storage("local").open_read(prefix("clinica_demo") + "b" * 300)


def test_a_deeply_nested_body_is_400_json(admin):
    body = "[" * 5000 + "]" * 5000
    for method, url in CLOUD + [("post", "/api/backups/create/"), ("patch", "/api/backups/schedule/")]:
        response = getattr(admin, method)(url, body, content_type="application/json")
        assert response.status_code == 400, (url, response.status_code, response.content[:300])
        assert "nested too deeply" in response.json()["detail"]


def test_an_unexpected_error_is_a_logged_json_500(admin, monkeypatch, caplog):
    import backups.api.views.cloud as views

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the listing")

    monkeypatch.setattr(views, "api_cloud_list", broken)
    admin.raise_request_exception = False
    with caplog.at_level(logging.ERROR, logger="backups.api"):
        response = admin.get("/api/backups/cloud/list/")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal error; the operators have been told."}
    assert any("a bug in the listing" in (r.exc_text or str(r.exc_info)) for r in caplog.records), caplog.text
