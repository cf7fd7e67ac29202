"""Ops fixtures: the real database and Redis of the integration tests, the public domain's client, real backups."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import Client
from django_tenants.utils import get_tenant_model

from backups.backup.run import backup_run
from backups.catalog.finalize import backup_record_finalize
from backups.catalog.records import backup_record_create
from backups.models import BackupRecord
from backups.storage import get_storage
from tests.integration.conftest import live_db  # noqa: F401 - database access without a wrapping transaction

PUBLIC_HOST = "localhost"  # the public tenant's domain (create_demo_clinics)
TOKEN = "metrics-test-token-0123456789"


@pytest.fixture(autouse=True)
def _fresh_readiness(settings) -> None:
    """Every /readyz of a test checks again (no answer reused from the test before)."""
    settings.BACKUPS_READYZ_CACHE_SECONDS = 0


@pytest.fixture
def public_client() -> Client:
    """A client of the public (ops) domain."""
    return Client(HTTP_HOST=PUBLIC_HOST)


@pytest.fixture
def metrics_token(settings) -> str:
    """Metrics on, with this test's token."""
    settings.BACKUPS_METRICS_TOKEN = TOKEN
    return TOKEN


@pytest.fixture
def cleanup() -> Iterator[None]:
    """Remove the records (and their local objects) a test made."""
    last = BackupRecord.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    yield
    local = get_storage("local")
    for record in BackupRecord.objects.filter(pk__gt=last):
        if record.storage_backend == "local":
            local.delete(record.storage_key)
            local.delete(record.storage_key + ".manifest.json")
    BackupRecord.objects.filter(pk__gt=last).delete()


def real_backup(schema: str, **kwargs) -> BackupRecord:
    """One backup of the schema, run here as a worker runs it (pg_dump, compression, storage), then recorded."""
    tenant = get_tenant_model().objects.filter(schema_name=schema).first()
    record = backup_record_create(schema_name=schema, tenant=tenant, **kwargs)
    record = backup_run(record_id=record.pk)
    backup_record_finalize(record_id=record.pk)
    return record


@dataclass
class Received:
    """What the loopback HTTP server was sent."""

    requests: list[dict] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0
    location: str = ""  # sent as Location (with a 3xx status: a redirect)


@pytest.fixture
def http_server() -> Iterator[tuple[str, Received]]:
    """A tiny HTTP server on a loopback port recording every POST and GET (method, path, headers, body); answers
    `status` (and `location`, if set)."""
    received = Received()
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                      "body": body})
            if received.delay:
                stop.wait(received.delay)
            self.send_response(received.status)
            if received.location:
                self.send_header("Location", received.location)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps({"ok": received.status < 300}).encode())

        do_GET = do_POST  # a followed redirect arrives as a GET

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", received
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
