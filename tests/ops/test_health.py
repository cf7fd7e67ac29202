"""/healthz and /readyz: answered on any host before the tenant lookup; readiness names each dependency."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from .helpers import closed_port

HOSTS = ("localhost", "demo.localhost", "10.0.0.7", "backups-web:8000")  # public, a tenant, a probe's address


@pytest.mark.parametrize("host", HOSTS)
def test_healthz_answers_on_any_host_without_touching_the_database(host):
    with CaptureQueriesContext(connection) as ctx:
        response = Client(HTTP_HOST=host).get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"
    assert ctx.captured_queries == []
    assert Client(HTTP_HOST=host).head("/healthz/").status_code == 200


def test_readyz_reports_each_dependency():
    response = Client(HTTP_HOST="10.0.0.7").get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "broker", "storage"}
    assert all(check["status"] == "ok" and check["seconds"] < 3 for check in body["checks"].values())


def test_readyz_is_503_when_the_broker_refuses(settings):
    with closed_port() as port:
        settings.BACKUPS_BROKER_URL = f"redis://127.0.0.1:{port}/0"
        response = Client(HTTP_HOST="localhost").get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    assert body["checks"]["broker"]["status"] == "error" and body["checks"]["broker"]["error"] == "ConnectionError"
    assert body["checks"]["database"]["status"] == "ok" and body["checks"]["storage"]["status"] == "ok"
    assert str(port) not in response.content.decode()  # addresses go to the log, not to an anonymous caller


def test_readyz_is_503_when_the_broker_refuses_writes(settings):
    """A Redis at maxmemory (noeviction) answers PING but refuses every write a message needs."""
    import redis

    from tests.servers.redis_server import RedisServer

    server = RedisServer.start()
    try:
        client = redis.Redis.from_url(server.url)
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", max(1, int(client.info("memory")["used_memory"]) - 4096))
        settings.BACKUPS_BROKER_URL = server.url
        response = Client(HTTP_HOST="localhost").get("/readyz")
    finally:
        server.stop()
    assert response.status_code == 503
    assert response.json()["checks"]["broker"] == {**response.json()["checks"]["broker"], "status": "error",
                                                   "error": "OutOfMemoryError"}


def test_readyz_gives_up_on_a_broker_that_never_answers(settings):
    """A broker that accepts the connection and says nothing: the probe answers within its timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    settings.BACKUPS_BROKER_URL = f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    settings.BACKUPS_HEALTH_TIMEOUT_SECONDS = 0.5
    try:
        started = time.monotonic()
        response = Client(HTTP_HOST="localhost").get("/readyz")
        elapsed = time.monotonic() - started
    finally:
        server.close()
        for conn, _ in accepted:
            conn.close()
    assert response.status_code == 503
    assert response.json()["checks"]["broker"]["error"] in ("timeout", "TimeoutError")
    assert elapsed < 2.5


def test_readyz_is_503_when_the_storage_cannot_be_written(settings, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    settings.BACKUPS_STORAGE = "local"
    settings.BACKUPS_LOCAL_ROOT = str(blocker / "backups")
    response = Client(HTTP_HOST="localhost").get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["storage"] == {"status": "error", "seconds": checks["storage"]["seconds"], "error": "StorageError"}
    assert checks["database"]["status"] == "ok"


def test_without_its_database_the_process_is_alive_and_not_ready():
    """A web process whose database refuses: /healthz 200 (no restart), /readyz 503 naming the database."""
    with closed_port() as port:
        env = {**os.environ, "DATABASE_URL": f"postgres://postgres@127.0.0.1:{port}/nothing"}
        script = (
            "import django, json; django.setup()\n"
            "from django.test import Client\n"
            "c = Client(HTTP_HOST='localhost')\n"
            "h, r = c.get('/healthz'), c.get('/readyz')\n"
            "print(json.dumps([h.status_code, r.status_code, r.json()]))\n"
        )
        done = subprocess.run([sys.executable, "-c", script], env=env, cwd=django_settings.BASE_DIR,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    healthz, readyz, body = json.loads(done.stdout.strip().splitlines()[-1])
    assert healthz == 200 and readyz == 503
    assert body["checks"]["database"]["status"] == "error" and body["checks"]["database"]["error"] == "OperationalError"
    assert body["checks"]["broker"]["status"] == "ok"


def test_readyz_checks_at_most_once_per_cache_period(settings, monkeypatch):
    """/readyz is anonymous: within BACKUPS_READYZ_CACHE_SECONDS a flood of probes reuses one round of checks."""
    from backups.ops import health

    monkeypatch.setattr(health, "_last", None)  # nothing from the tests before
    settings.BACKUPS_READYZ_CACHE_SECONDS = 30
    client = Client(HTTP_HOST="localhost")
    assert client.get("/readyz").status_code == 200
    with closed_port() as port:
        settings.BACKUPS_BROKER_URL = f"redis://127.0.0.1:{port}/0"
        assert client.get("/readyz").status_code == 200  # the answer of a moment ago
        settings.BACKUPS_READYZ_CACHE_SECONDS = 0
        assert client.get("/readyz").status_code == 503
