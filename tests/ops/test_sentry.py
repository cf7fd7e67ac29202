"""Sentry: errors reach the DSN's server when SENTRY_DSN is set; without it sentry-sdk is not even imported."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

from django.conf import settings as django_settings

FAILING_BACKUP = (
    "import django, sys; django.setup()\n"
    "from backups.backup.run import backup_run\n"
    "from backups.catalog.records import backup_record_create\n"
    "r = backup_run(record_id=backup_record_create(schema_name='clinica_gone').pk)\n"
    "print(r.pk, r.status, 'sentry_sdk' in sys.modules)\n"
    "if 'sentry_sdk' in sys.modules:\n"
    "    import sentry_sdk; sentry_sdk.flush(timeout=10)\n"
)


def _run(env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTRY_")}
    env.update(env_extra)
    done = subprocess.run([sys.executable, "-c", FAILING_BACKUP], env=env, cwd=django_settings.BASE_DIR,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def _envelope_items(body: bytes, encoding: str | None) -> list[dict]:
    if encoding == "gzip":
        body = gzip.decompress(body)
    items = []
    for line in body.splitlines():
        try:
            items.append(json.loads(line))
        except ValueError:
            continue
    return items


def test_a_failed_backup_is_reported_to_sentry(http_server, cleanup):
    url, received = http_server
    dsn = url.replace("http://", "http://publickey@") + "/42"
    done = _run({"SENTRY_DSN": dsn, "SENTRY_ENVIRONMENT": "ops-test"})
    pk, status, imported = done.stdout.split()
    assert status == "failed" and imported == "True"
    envelopes = [r for r in received.requests if r["path"] == "/api/42/envelope/"]
    assert envelopes, [r["path"] for r in received.requests]
    events = [item for r in envelopes for item in _envelope_items(r["body"], r["headers"].get("Content-Encoding"))
              if item.get("level") == "error"]
    [event] = [e for e in events if "backup failed" in json.dumps(e)]
    assert event["environment"] == "ops-test"
    assert event["logger"] == "backups.catalog.records"
    assert f"record={pk}" in json.dumps(event) and "clinica_gone" in json.dumps(event)


def test_without_a_dsn_sentry_is_not_loaded(cleanup):
    done = _run({})
    _, status, imported = done.stdout.split()
    assert status == "failed" and imported == "False"
