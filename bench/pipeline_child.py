"""One backup through the project's own service, alone in a fresh process, for bench_pipeline.

    python bench/pipeline_child.py SCHEMA [OPTIONS_JSON]

Creates a BackupRecord with backup_record_create and runs backup_run(record_id=...) (what the worker
does), format sql, compression zstd. OPTIONS_JSON is for the tuning runs: {"variant": NAME} applies a
variant of bench/variants.py, other keys override BACKUPS_* settings (e.g. {"BACKUPS_READ_SIZE": 262144}).

Prints one JSON line on stdout: the wall time of backup_run alone (Django's start-up excluded), this
process's peak RSS (ru_maxrss), pg_dump's peak RSS (VmHWM of /proc/<pid>/status, polled while it runs:
getrusage(RUSAGE_CHILDREN) cannot be used, because Linux charges a vfork'd child with its parent's RSS
at exec time, so it reports about Python's size), the sizes, and the storage key.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
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


def vm_hwm_of(pid: int) -> int:
    """VmHWM (peak RSS, KiB) of another process; 0 once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class ChildPeakRss:
    """Records the pids of the processes the dumper starts and polls their VmHWM until stopped."""

    def __init__(self, interval: float = 0.02) -> None:
        self.pids: list[int] = []
        self.started_at = 0.0  # perf_counter when the first one was started
        self.peak_kib = 0
        self.interval = interval
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def install(self, module) -> None:
        """Make `module.subprocess.Popen` (module: backups.postgres.dumpers) register the pids it starts."""
        watcher = self

        class _Popen(subprocess.Popen):
            def __init__(self, *args, **kwargs) -> None:
                watcher.started_at = watcher.started_at or time.perf_counter()
                super().__init__(*args, **kwargs)
                watcher.pids.append(self.pid)

        class _Subprocess:
            def __getattr__(self, name: str):
                return getattr(subprocess, name)

            Popen = _Popen

        module.subprocess = _Subprocess()
        self.thread.start()

    def _poll(self) -> None:
        while not self.stopped.wait(self.interval):
            for pid in self.pids:
                self.peak_kib = max(self.peak_kib, vm_hwm_of(pid))

    def stop(self) -> int:
        """Stop polling; the highest VmHWM seen, in KiB."""
        self.stopped.set()
        self.thread.join()
        return self.peak_kib


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

    from backups.backup.run import backup_run
    from backups.catalog.records import backup_record_create
    from backups.models import BackupRecord
    from backups.postgres import dumpers
    from backups.storage import local

    variant = overrides.pop("variant", None)
    if variant:
        from bench import variants

        overrides = {**variants.VARIANTS[variant].settings, **overrides}
        variants.apply(variant)
    for name, value in overrides.items():
        setattr(settings, name, value)

    from backups.backup import run as backup_run_module

    chunks = [0, 0]  # sink.write calls, bytes

    class CountingSink(backup_run_module.BackupSink):  # counts the dumper's chunks; behaviour unchanged
        def write(self, data: bytes) -> None:
            chunks[0] += 1
            chunks[1] += len(data)
            super().write(data)

    backup_run_module.BackupSink = CountingSink

    dump_ended = [0.0]
    original_dump = backup_run_module.dump_with_pg_dump

    def timed_dump(*args, **kwargs):  # notes when the dump (pg_dump, reading, row counts) is over
        try:
            return original_dump(*args, **kwargs)
        finally:
            dump_ended[0] = time.perf_counter()

    backup_run_module.dump_with_pg_dump = timed_dump

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
    pg_dump_rss = ChildPeakRss()
    pg_dump_rss.install(dumpers)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    record = backup_run(record_id=record.pk)
    ended = time.perf_counter()
    seconds = ended - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    pg_dump_peak_kib = pg_dump_rss.stop()
    report = {
        "record_id": record.pk,
        "status": record.status,
        "error": record.error,
        "seconds": seconds,
        "setup_seconds": setup_seconds,
        "commit_seconds": commit_seconds,
        "before_pg_dump_seconds": pg_dump_rss.started_at - t0 if pg_dump_rss.started_at else 0.0,
        "dump_seconds": dump_ended[0] - pg_dump_rss.started_at if pg_dump_rss.started_at else 0.0,
        "after_dump_seconds": ended - dump_ended[0] if dump_ended[0] else 0.0,
        "python_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "python_vmhwm_kib": vm_hwm_kib(),
        "pg_dump_rss_kib": pg_dump_peak_kib,
        "children_ru_maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        "chunks": chunks[0],
        "mean_chunk_kib": chunks[1] / max(1, chunks[0]) / 1024,
        "size": record.size,
        "plain_size": record.plain_size,
        "storage_key": record.storage_key,
        "cpu_seconds": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
    }
    print(json.dumps(report), flush=True)
    return 0 if record.status == BackupRecord.Status.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
