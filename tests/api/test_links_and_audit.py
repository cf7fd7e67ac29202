"""Signed local links end with the session of the admin who minted them and never reach a log whole; tenant
admins see the host's operators as "operator" in their audit trail, never by name."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
from django_tenants.utils import get_tenant_model, schema_context
from gunicorn.config import Config

from accounts.models import User
from backups.catalog.records import backup_event_create, backup_record_create
from backups.models import BackupEvent, BackupRecord
from backups.storage import get_storage
from project.gunicorn_logging import RedactingLogger

from .conftest import api_client

SCHEMA = "clinica_demo"
PASSWORD = "a-long-test-password"
DATA = b"backup bytes " * 100


@pytest.fixture
def member() -> Iterator[User]:
    """A throwaway ADMIN of clinica_demo."""
    name = f"linker-{uuid.uuid4().hex[:8]}@clinica_demo"
    with schema_context(SCHEMA):
        user = User.objects.create_user(username=name, email=name, password=PASSWORD, role=User.Role.ADMIN)
    try:
        yield user
    finally:
        with schema_context(SCHEMA):
            User.objects.filter(pk=user.pk).delete()


@pytest.fixture
def stored(cleanup) -> BackupRecord:
    """A succeeded backup whose object is in the local storage."""
    tenant = get_tenant_model().objects.get(schema_name=SCHEMA)
    record = backup_record_create(schema_name=SCHEMA, tenant=tenant)
    get_storage("local").put_bytes(record.storage_key, DATA)
    BackupRecord.objects.filter(pk=record.pk).update(status="succeeded", size=len(DATA),
                                                     sha256=hashlib.sha256(DATA).hexdigest())
    record.refresh_from_db()
    return record


def _login(user: User, kind: str) -> tuple[str, dict]:
    """An Authorization header, and what logs that session out."""
    if kind == "token":
        token = api_client(SCHEMA).post("/api/auth/token/", {"username": user.username, "password": PASSWORD},
                                        format="json").json()["token"]
        return f"Token {token}", {}
    pair = api_client(SCHEMA).post("/api/auth/jwt/", {"username": user.username, "password": PASSWORD},
                                   format="json").json()
    return f"Bearer {pair['access']}", {"refresh": pair["refresh"]}


def _link(authorization: str, record: BackupRecord) -> str:
    response = api_client(SCHEMA, authorization).post("/api/backups/cloud/get-url/", {"s3_key": record.storage_key},
                                                      format="json")
    assert response.status_code == 200, response.content
    return urlsplit(response.json()["download_url"]).path


def _fetch(path: str) -> int:
    return api_client(SCHEMA).get(path).status_code


@pytest.mark.parametrize("kind", ["token", "jwt"])
def test_logging_out_ends_the_links_the_session_minted(member, stored, kind):
    authorization, logout_body = _login(member, kind)
    other, _ = _login(member, kind)  # another session of the same admin
    link, other_link = _link(authorization, stored), _link(other, stored)
    assert _fetch(link) == 200
    response = api_client(SCHEMA, authorization).post("/api/auth/logout/", logout_body, format="json")
    assert response.status_code == 204, response.content
    assert _fetch(link) == 404
    if kind == "jwt":  # a DRF token is one per user: its logout ends every link it minted, in any session
        assert _fetch(other_link) == 200


@pytest.mark.parametrize("change", ["deactivate", "password"])
def test_deactivating_the_minter_or_changing_their_password_ends_their_links(member, stored, change):
    link = _link(_login(member, "jwt")[0], stored)
    assert _fetch(link) == 200
    with schema_context(SCHEMA):
        if change == "deactivate":
            member.is_active = False
        else:
            member.set_password("another-long-password")
        member.save()
    assert _fetch(link) == 404


def test_an_unbound_link_is_refused(stored):
    """Minted without a minter (as before links were bound): nothing can end it, so it is refused."""
    link = urlsplit(get_storage("local").url(stored.storage_key, 600)).path
    assert _fetch(link) == 404


def test_a_signed_link_is_redacted_from_djangos_404_warning(stored, caplog):
    link = urlsplit(get_storage("local").url(stored.storage_key, 600)).path
    signature = link.rstrip("/").rsplit("/", 1)[1]
    with caplog.at_level(logging.WARNING, logger="django.request"):
        assert _fetch(link) == 404
    assert "Not Found: /api/backups/local-download/<redacted>/" in caplog.text
    assert signature not in caplog.text


def test_a_signed_link_is_redacted_from_gunicorns_access_log():
    token = "eyJrIjoiY2xpbmljYV9kZW1vL3gifQ:1tAbCd:SiGnAtUrE"
    path = f"/api/backups/local-download/{token}/"
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": path + "?x=1", "SERVER_PROTOCOL": "HTTP/1.1", "PATH_INFO": path,
               "QUERY_STRING": "x=1", "REMOTE_ADDR": "10.0.0.9", "HTTP_REFERER": "https://demo.example" + path}
    request = SimpleNamespace(headers=[("REFERER", "https://demo.example" + path)])
    response = SimpleNamespace(status="200 OK", headers=[], sent=10)
    logger = RedactingLogger(Config())
    line = logger.cfg.access_log_format % logger.atoms_wrapper_class(
        logger.atoms(response, request, environ, timedelta(seconds=1)))
    atoms = logger.atoms(response, request, environ, timedelta(seconds=1))
    assert "SiGnAtUrE" not in line and "SiGnAtUrE" not in str(atoms)
    assert "GET /api/backups/local-download/<redacted>/?x=1 HTTP/1.1" in line


def test_tenant_admins_see_an_operator_as_operator(admin, stored):
    backup_event_create(record=stored, action=BackupEvent.Action.DELETE, actor={"admin": "ops-root-7f3a"},
                        details={"via": "admin", "file_name": stored.file_name})
    response = admin.get("/api/backups/audit/?page_size=50")
    assert response.status_code == 200
    mine = [e for e in response.json()["results"] if e["record_id"] == stored.pk and e["action"] == "delete"]
    assert [e["actor"] for e in mine] == [{"operator": True, "name": "operator"}]
    assert b"ops-root-7f3a" not in response.content
