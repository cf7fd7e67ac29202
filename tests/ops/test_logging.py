"""One log line per backup event, with tenant, record, file, size and duration; JSON by LOG_FORMAT=json."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from backups.models import BackupRecord
from backups.ops.observability import logging_config
from tests.integration.conftest import wait_for_record

from .conftest import real_backup

RECORDS_LOGGER = "backups.catalog.records"


def _events(caplog, message: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == RECORDS_LOGGER and r.getMessage().startswith(message)]


def test_a_successful_backup_logs_one_line_with_its_facts(caplog, cleanup):
    with caplog.at_level(logging.INFO, logger="backups"):
        record = real_backup("clinica_demo")
    assert record.status == BackupRecord.Status.SUCCEEDED
    [event] = _events(caplog, "backup succeeded")
    line = event.getMessage()
    assert event.levelno == logging.INFO
    for fact in ("tenant=clinica_demo", f"record={record.pk}", f"file={record.file_name}", f"size={record.size}",
                 f"duration={record.duration_seconds:.2f}s"):
        assert fact in line, line
    assert (event.tenant, event.record_id, event.file_name, event.size) == (
        "clinica_demo", record.pk, record.file_name, record.size)
    assert event.duration_seconds == pytest.approx(record.duration_seconds)
    assert event.event == "backup_succeeded"


def test_a_failed_backup_logs_one_error_line_with_its_facts(caplog, cleanup):
    with caplog.at_level(logging.INFO, logger="backups"):
        record = real_backup("clinica_gone")
    assert record.status == BackupRecord.Status.FAILED
    [event] = _events(caplog, "backup failed")
    assert event.levelno == logging.ERROR
    line = event.getMessage()
    for fact in ("tenant=clinica_gone", f"record={record.pk}", f"file={record.file_name}", "duration=",
                 "does not exist"):
        assert fact in line, line
    assert "\n" not in line
    assert event.event == "backup_failed" and "does not exist" in event.error
    assert not _events(caplog, "backup succeeded")


@pytest.mark.worker
def test_the_worker_prints_each_backup_event_once(celery_worker, cleanup):  # noqa: F811
    """The duplicate: a handler on `backups` plus propagation to the root handler printed every line twice."""
    from backups.catalog.records import backup_record_create
    from backups.tasks import run_backup

    log = Path(django_settings.BASE_DIR) / "var" / "test-worker.log"
    start = log.stat().st_size
    record = backup_record_create(schema_name="clinica_norte")
    run_backup.delay(record.pk)
    assert wait_for_record(record.pk).status == BackupRecord.Status.SUCCEEDED
    record.refresh_from_db()
    deadline = time.monotonic() + 10
    while True:
        with open(log, "rb") as f:
            f.seek(start)
            new = f.read().decode(errors="replace").splitlines()
        lines = [line for line in new if f"file={record.file_name}" in line]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(lines) == 1, "\n".join(lines)
    assert "INFO" in lines[0] and "backups.catalog.records" in lines[0]
    for fact in (f"record={record.pk}", f"size={record.size}", "tenant=clinica_norte", "duration="):
        assert fact in lines[0], lines[0]


def _run_logged(log_format: str, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOG_FORMAT": log_format}
    script = "import django; django.setup()\n" + code
    return subprocess.run([sys.executable, "-c", script], env=env, cwd=django_settings.BASE_DIR,
                          capture_output=True, text=True, timeout=120)


BACKUP_IN_A_PROCESS = (
    "from backups.backup.run import backup_run\n"
    "from backups.catalog.records import backup_record_create\n"
    "from django_tenants.utils import get_tenant_model\n"
    "t = get_tenant_model().objects.get(schema_name='clinica_sonrisa')\n"
    "r = backup_run(record_id=backup_record_create(schema_name=t.schema_name, tenant=t).pk)\n"
    "print(r.pk, r.file_name, r.size)\n"
)


def test_json_logs_are_one_object_a_line_with_the_event_fields(cleanup):
    done = _run_logged("json", BACKUP_IN_A_PROCESS)
    assert done.returncode == 0, done.stderr
    pk, file_name, size = done.stdout.split()
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    objects = [json.loads(line) for line in lines]  # every line is JSON
    [event] = [o for o in objects if o.get("event") == "backup_succeeded"]
    assert event["level"] == "INFO" and event["logger"] == RECORDS_LOGGER and "time" in event
    assert (event["tenant"], event["record_id"], event["file_name"], event["size"]) == (
        "clinica_sonrisa", int(pk), file_name, int(size))
    assert event["duration_seconds"] > 0 and event["message"].startswith("backup succeeded: tenant=clinica_sonrisa")


def test_text_logs_print_the_event_once():
    done = _run_logged("text", "import logging\nlogging.getLogger('backups.catalog.records').warning('once %s', 1)\n"
                               "logging.getLogger('django.request').warning('django once')\n")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("once 1") == 1 and done.stderr.count("django once") == 1
    assert "WARNING" in done.stderr and "backups.catalog.records: once 1" in done.stderr


def test_an_unknown_log_format_is_refused():
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        logging_config(log_format="xml")
