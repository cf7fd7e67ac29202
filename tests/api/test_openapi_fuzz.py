"""The whole API, fuzzed from its own OpenAPI schema by schemathesis against a live gunicorn on loopback.

Every operation gets the schema's examples, schemathesis' coverage cases (boundaries, wrong types) and
up to MAX_EXAMPLES generated ones, sent as clinica_demo's admin (DRF token, `Host: demo.localhost`).
No answer may be a 5xx, and every answer must match the schema: a documented status code, content
type, headers and body. Every case is sent (no time budget: a case left out could hide a failure);
MAX_EXAMPLES keeps the run to about half a minute. It prints how many requests it made. What the
fuzzing changes (records, the schedule) is put back afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import schemathesis
from django.conf import settings
from django_tenants.utils import get_tenant_model
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from backups.api.services.schedule import EDITABLE_FIELDS
from tests.servers.moto_s3 import free_port

from .conftest import SUMMARY

pytestmark = pytest.mark.worker

MAX_EXAMPLES = 15  # generated cases per operation, beside the examples and coverage cases
HOST = "demo.localhost"
CHECKS = [schemathesis.checks.not_a_server_error, schemathesis.checks.status_code_conformance,
          schemathesis.checks.content_type_conformance, schemathesis.checks.response_headers_conformance,
          schemathesis.checks.response_schema_conformance]


@dataclass
class FuzzRun:
    """Where the server is, what to send, and how many requests went out."""

    base_url: str
    headers: dict[str, str]
    started: float = field(default_factory=time.monotonic)
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


@pytest.fixture(scope="module")
def gunicorn_server(api_worker) -> Iterator[str]:
    """gunicorn serving the project on a free loopback port, with the test environment, stopped by its pid."""
    port = free_port()
    log = Path(settings.BASE_DIR) / "var" / "test-api-server.log"
    env = {**os.environ, "BACKUPS_SYNC_WAIT_SECONDS": "2", "API_THROTTLE_ANON": "100000/min",
           "API_THROTTLE_USER": "100000/min", "API_THROTTLE_AUTH": "100000/min", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "gunicorn", "project.wsgi:application", "--bind", f"127.0.0.1:{port}",
           "--workers", "2", "--threads", "4", "--timeout", "60", "--access-logfile", "-"]
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
                if requests.get(f"{base}/api/schema/", headers={"Host": HOST}, timeout=10).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not answer within 30 s; see {log}")
            time.sleep(0.2)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def fuzz_run(gunicorn_server, creds) -> Iterator[FuzzRun]:
    """The run's counters; prints them when the run ends."""
    run = FuzzRun(base_url=gunicorn_server,
                  headers={"Host": HOST, "Authorization": f"Token {creds['clinica_demo'].admin_token}"})
    yield run
    SUMMARY.append(f"schemathesis: {run.requests} requests in {time.monotonic() - run.started:.1f} s, statuses "
                   f"{dict(sorted(run.statuses.items()))}")


@pytest.fixture(scope="module")
def restore_afterwards(django_db_setup, django_db_blocker, fuzz_run) -> Iterator[None]:  # noqa: F811
    """Put back what the fuzzing may change: clinica_demo's schedule, and the records it made."""
    from backups.models import BackupRecord, RestoreJob
    from backups.storage import get_storage

    from .conftest import wait_until_idle

    with django_db_blocker.unblock():
        Tenant = get_tenant_model()
        tenant = Tenant.objects.get(schema_name="clinica_demo")
        schedule = {name: getattr(tenant, name) for name in EDITABLE_FIELDS}
        last_record = BackupRecord.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        last_job = RestoreJob.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        yield
        wait_until_idle(after_record=last_record, after_job=last_job)
        tenant = Tenant.objects.get(pk=tenant.pk)
        for name, value in schedule.items():
            setattr(tenant, name, value)
        tenant.save()
        local = get_storage("local")
        for record in BackupRecord.objects.filter(pk__gt=last_record):
            local.delete(record.storage_key)
            local.delete(record.storage_key + ".manifest.json")
        BackupRecord.objects.filter(pk__gt=last_record).delete()
        RestoreJob.objects.filter(pk__gt=last_job).delete()


def published_schema() -> dict:
    """The schema exactly as /api/schema/ renders it (built without a database, so this works at collection)."""
    return json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))


# Loaded at collection so each operation is its own test (schemathesis' lazy `from_fixture` loader does not
# work with pytest 9's node ids); test_the_fuzzed_schema_is_the_served_one checks the server publishes it.
schema = schemathesis.openapi.from_dict(published_schema())


def test_the_fuzzed_schema_is_the_served_one(fuzz_run):
    served = requests.get(f"{fuzz_run.base_url}/api/schema/", timeout=30,
                          headers={"Host": HOST, "Accept": "application/vnd.oai.openapi+json"})
    assert served.status_code == 200
    assert served.json() == published_schema()


@schema.parametrize()
@hypothesis_settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                     suppress_health_check=list(HealthCheck))
def test_api_answers_as_its_schema_says(case, fuzz_run, restore_afterwards):
    fuzz_run.requests += 1
    headers = fuzz_run.headers
    if case.operation.path == "/api/auth/logout/":  # sent with the admin's token, logout would delete it
        headers = {"Host": HOST}
    response = case.call(base_url=fuzz_run.base_url, headers=headers, timeout=30)
    fuzz_run.statuses[response.status_code] = fuzz_run.statuses.get(response.status_code, 0) + 1
    case.validate_response(response, checks=CHECKS, headers=headers)
