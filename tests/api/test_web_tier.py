"""The web tier as deployed (gunicorn with project/gunicorn.conf.py): a slow download outlives the worker timeout.

The reproduction: sync workers with `--timeout 5` cut a 75 MB download at 21.9 MB. Here the timeout is 2 s
and the client reads a 40 MB backup over about 6 s; it must get every byte, with the checksum it expects.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator

import pytest
import requests
from django_tenants.utils import get_tenant_model

from backups.catalog.records import backup_record_create, backup_record_mark_succeeded
from backups.storage import get_storage

from .web_server import procfile_web

SIZE = 40 << 20


@pytest.fixture(scope="module")
def deployed_web(django_db_setup) -> Iterator[str]:  # noqa: F811
    """gunicorn -c project/gunicorn.conf.py on a free loopback port, worker timeout 2 s."""
    with procfile_web("test-web-tier.log", GUNICORN_TIMEOUT="2", WEB_CONCURRENCY="1",
                      API_THROTTLE_USER="100000/min") as base:
        yield base


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
