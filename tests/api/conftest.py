"""API fixtures: the real database, Redis and a real Celery worker, plus a loopback S3 server for the cloud tests.

Storage choice for the cloud tests: the session's S3 server (radosgw, tests/servers/radosgw.py) serves
this package, and the package's own worker is started with `AWS_*` variables pointing at it (its
BACKUPS_STORAGE stays `local`). A record carries its backend, so a record the test process creates while
its settings say `BACKUPS_STORAGE=s3` (the `s3` fixture overrides BACKUPS_STORAGE and the AWS_* settings)
is dumped by the worker into that server, and everything else goes to the local folder both processes share. One
worker serves both kinds, so no test waits on a second worker start.

The package's worker runs only while tests/api runs (package scope); tests/integration starts its own
afterwards. Run tests/api before tests/integration in one session (the default order), since a still
running integration worker would not know the S3 server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.core.cache import cache
from django_tenants.utils import get_tenant_model, schema_context
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.models import User
from backups.api.tokens import issue_pair
from backups.models import BackupRecord, RestoreJob
from backups.storage import get_storage
from tests.integration.conftest import live_db  # noqa: F401 - database access without a wrapping transaction
from tests.s3env import S3_BUCKET, reset_bucket, s3_env  # noqa: F401 - used by the S3 tests
from tests.servers.radosgw import S3TestServer

DOMAINS = {"clinica_demo": "demo.localhost", "clinica_sonrisa": "sonrisa.localhost",
           "clinica_norte": "norte.localhost"}
SUMMARY: list[str] = []  # lines printed at the end of the run (the fuzzing's request count)


def pytest_terminal_summary(terminalreporter) -> None:
    for line in SUMMARY:
        terminalreporter.write_line(line)


@dataclass(frozen=True)
class Creds:
    """Credentials of one clinic's users: DRF tokens and JWTs of its admin and its dentist."""

    schema: str
    domain: str
    admin_token: str
    dentist_token: str
    admin_jwt: str
    dentist_jwt: str
    admin_refresh: str


def mint_jwt(user: User, schema: str) -> tuple[str, str]:
    """An access and a refresh token of `user`, issued as the clinic's JWT endpoint issues them."""
    refresh = issue_pair(user, get_tenant_model().objects.get(schema_name=schema))
    return str(refresh.access_token), str(refresh)


def clear_cache() -> None:
    """Delete this run's cache keys (throttle counts, revoked sessions) from the shared Redis cache.

    Never `cache.clear()`: that is FLUSHDB, and the test broker's queues live in the same Redis database.
    """
    client = cache._cache.get_client(None, write=True)
    keys = list(client.scan_iter(match=cache.make_key("*"), count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture(scope="package")
def creds(django_db_setup, django_db_blocker) -> dict[str, Creds]:  # noqa: F811
    """Tokens and JWTs of each demo clinic's admin (user 1 everywhere) and dentist, made in its own schema."""
    out = {}
    with django_db_blocker.unblock():
        for schema, domain in DOMAINS.items():
            with schema_context(schema):
                admin = User.objects.get(username=f"admin@{schema}")
                dentist = User.objects.get(username=f"dentista@{schema}")
                admin_jwt, admin_refresh = mint_jwt(admin, schema)
                dentist_jwt, _ = mint_jwt(dentist, schema)
                out[schema] = Creds(schema, domain, Token.objects.get_or_create(user=admin)[0].key,
                                    Token.objects.get_or_create(user=dentist)[0].key, admin_jwt, dentist_jwt,
                                    admin_refresh)
    return out


def api_client(schema: str, authorization: str | None = None) -> APIClient:
    """A client talking to the clinic's domain, with an Authorization header if given."""
    client = APIClient(HTTP_HOST=DOMAINS.get(schema, schema))
    if authorization:
        client.credentials(HTTP_AUTHORIZATION=authorization)
    return client


@pytest.fixture
def admin(creds) -> APIClient:
    """clinica_demo's admin, with a DRF token."""
    return api_client("clinica_demo", f"Token {creds['clinica_demo'].admin_token}")


@pytest.fixture(autouse=True)
def _fresh_throttles() -> Iterator[None]:
    """Throttle counters live in the shared cache: each test starts with none."""
    clear_cache()
    yield
    clear_cache()


@pytest.fixture(autouse=True)
def _api_settings(settings):
    """Short waits and generous hourly limits unless a test says otherwise."""
    settings.BACKUPS_SYNC_WAIT_SECONDS = 15
    settings.BACKUPS_MANUAL_PER_HOUR = 1000
    settings.BACKUPS_RESTORES_PER_HOUR = settings.BACKUPS_VERIFIES_PER_HOUR = 1000
    return settings


# --- the real worker and the S3 server -----------------------------------------------------------------------

@pytest.fixture(scope="package")
def api_worker(celery_worker, s3_server):  # noqa: F811
    """The session's one real worker (it knows the S3 server too, so the suite runs in any order)."""
    reset_bucket(s3_server)
    return celery_worker


@pytest.fixture
def s3(settings, s3_server) -> S3TestServer:
    """This test's storage is the loopback S3 server (an empty bucket); the worker already points at it."""
    reset_bucket(s3_server)
    settings.BACKUPS_STORAGE = "s3"
    for name, value in s3_env(s3_server).items():
        setattr(settings, name, int(value) if name == "AWS_S3_MAX_ATTEMPTS" else value)
    return s3_server


# --- waiting and cleaning up ---------------------------------------------------------------------------------

def wait_until_idle(schemas=tuple(DOMAINS), *, after_record: int = 0, after_job: int = 0,
                    timeout: float = 120.0) -> None:
    """Wait until no backup or restore of these clinics made after those ids is queued or running (a record
    another test left queued on purpose is not this test's to wait for)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = (BackupRecord.objects.active().filter(schema_name__in=schemas, pk__gt=after_record).exists()
                or RestoreJob.objects.active().filter(schema_name__in=schemas, pk__gt=after_job).exists())
        if not busy:
            return
        time.sleep(0.2)
    raise AssertionError(f"backups or restores still running after {timeout} s")


def wait_for_status(record_id: int, *, timeout: float = 90.0) -> BackupRecord:
    """Poll until the record finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = BackupRecord.objects.get(pk=record_id)
        if not record.is_active:
            return record
        time.sleep(0.1)
    raise AssertionError(f"record {record_id} still {record.status} after {timeout} s")


def wait_for_job(job_id: int, *, timeout: float = 180.0) -> RestoreJob:
    """Poll until the restore job finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = RestoreJob.objects.get(pk=job_id)
        if not job.is_active:
            return job
        time.sleep(0.2)
    raise AssertionError(f"restore job {job_id} still {job.status} after {timeout} s")


@pytest.fixture
def cleanup() -> Iterator[None]:
    """Remove the records (and local objects) and restore jobs a test made, once nothing runs any more."""
    last_record = BackupRecord.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    last_job = RestoreJob.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    yield
    try:
        wait_until_idle(after_record=last_record, after_job=last_job)
    finally:
        local = get_storage("local")
        for record in BackupRecord.objects.filter(pk__gt=last_record):
            if record.storage_backend == "local":
                local.delete(record.storage_key)
                local.delete(record.storage_key + ".manifest.json")
        BackupRecord.objects.filter(pk__gt=last_record).delete()
        RestoreJob.objects.filter(pk__gt=last_job).delete()
