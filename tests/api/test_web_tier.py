"""The web tier as deployed (gunicorn with project/gunicorn.conf.py): a slow download outlives the worker timeout.

The reproduction: sync workers with `--timeout 5` cut a 75 MB download at 21.9 MB. Here the timeout is 2 s
and the client reads a 40 MB backup over about 6 s; it must get every byte, with the checksum it expects.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django_tenants.utils import get_tenant_model

from backups.services.records import backup_record_create, backup_record_mark_succeeded
from backups.storage import get_storage
from tests.servers.moto_s3 import free_port

SIZE = 40 << 20


@pytest.fixture(scope="module")
def deployed_web(django_db_setup) -> Iterator[str]:  # noqa: F811
    """gunicorn -c project/gunicorn.conf.py on a free loopback port, worker timeout 2 s; stopped by its pid."""
    port = free_port()
    log = Path(settings.BASE_DIR) / "var" / "test-web-tier.log"
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "GUNICORN_TIMEOUT": "2", "WEB_CONCURRENCY": "1",
           "API_THROTTLE_USER": "100000/min", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "gunicorn", "project.wsgi:application", "-c", "project/gunicorn.conf.py"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=settings.BASE_DIR,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"gunicorn exited with {proc.returncode}; see {log}")
            try:
                requests.get(f"{base}/api/schema/", headers={"Host": "demo.localhost"}, timeout=5)
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    pytest.fail(f"gunicorn did not answer within 30 s; see {log}")
                time.sleep(0.2)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def big_backup() -> Iterator:
    """A succeeded record of clinica_demo whose stored object is 40 MB of incompressible bytes."""
    tenant = get_tenant_model().objects.get(schema_name="clinica_demo")
    record = backup_record_create(schema_name="clinica_demo", tenant=tenant, fmt="sql", compression="none")
    data = os.urandom(SIZE)
    storage = get_storage("local")
    storage.put_bytes(record.storage_key, data)
    digest = hashlib.sha256(data).hexdigest()
    record = backup_record_mark_succeeded(record=record, size=SIZE, sha256=digest, plain_size=SIZE,
                                          plain_sha256=digest, manifest={})
    try:
        yield record
    finally:
        storage.delete(record.storage_key)
        record.delete()


def test_a_slow_download_streams_to_the_end_past_the_worker_timeout(deployed_web, big_backup, creds):
    url = f"{deployed_web}/api/backups/history/{big_backup.pk}/download/"
    headers = {"Host": "demo.localhost", "Authorization": f"Token {creds['clinica_demo'].admin_token}"}
    digest = hashlib.sha256()
    got = 0
    started = time.monotonic()
    with requests.get(url, headers=headers, stream=True, timeout=30) as response:
        assert response.status_code == 200, response.text[:300]
        for chunk in response.iter_content(1 << 20):
            digest.update(chunk)
            got += len(chunk)
            time.sleep(0.15)  # a slow client: about 6 s for 40 MiB
    elapsed = time.monotonic() - started
    assert elapsed > 4, f"the download was not slow enough to test the timeout ({elapsed:.1f} s)"
    assert got == SIZE
    assert digest.hexdigest() == big_backup.sha256 == response.headers["X-Backup-SHA256"]
