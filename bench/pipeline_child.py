"""One backup through the project's own service, alone in a fresh process, for bench_pipeline.

    python bench/pipeline_child.py SCHEMA [SETTINGS_JSON]

Creates a BackupRecord with backup_record_create and runs backup_run(record_id=...) (what the worker
does), format sql, compression zstd. SETTINGS_JSON optionally overrides BACKUPS_* settings (e.g.
{"BACKUPS_READ_SIZE": 262144}) for the tuning runs. Prints one JSON line on stdout with the wall time
of backup_run alone (Django's start-up is excluded), this process's peak RSS, its children's peak RSS
(pg_dump's: the only other child is one short `pg_dump --version`), the sizes, and the storage key.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def vm_hwm_kib() -> int:
    """Peak RSS of this process from /proc/self/status (VmHWM), in KiB; 0 when unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main(argv: list[str]) -> int:
    """Run one backup of argv[0] and print the JSON report; exit 1 when the backup did not succeed."""
    schema = argv[0]
    overrides = json.loads(argv[1]) if len(argv) > 1 else {}
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    started = time.perf_counter()
    import django

    django.setup()
    from django.conf import settings
    from django_tenants.utils import get_tenant_model

    from backups.models import BackupRecord
    from backups.services.backup_run import backup_run
    from backups.services.records import backup_record_create
    from backups.storage import local

    for name, value in overrides.items():
        setattr(settings, name, value)

    commit_seconds = 0.0
    original_commit = local.LocalWriter.commit

    def timed_commit(self) -> None:  # measures the fsync + rename at the end; behaviour unchanged
        nonlocal commit_seconds
        t0 = time.perf_counter()
        try:
            original_commit(self)
        finally:
            commit_seconds += time.perf_counter() - t0

    local.LocalWriter.commit = timed_commit

    tenant = get_tenant_model().objects.filter(schema_name=schema).first()
    record = backup_record_create(schema_name=schema, tenant=tenant, fmt="sql", compression="zstd",
                                  requested_by={"bench": "pipeline"})
    setup_seconds = time.perf_counter() - started
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    record = backup_run(record_id=record.pk)
    seconds = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    report = {
        "record_id": record.pk,
        "status": record.status,
        "error": record.error,
        "seconds": seconds,
        "setup_seconds": setup_seconds,
        "commit_seconds": commit_seconds,
        "python_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "python_vmhwm_kib": vm_hwm_kib(),
        "children_rss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        "size": record.size,
        "plain_size": record.plain_size,
        "storage_key": record.storage_key,
        "cpu_seconds": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
    }
    print(json.dumps(report), flush=True)
    return 0 if record.status == BackupRecord.Status.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
