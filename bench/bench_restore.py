"""A verified restore (spool, SHA-256 check, then the script loader) vs `zstd -dc | psql`.

The trust rules make a restore read the stored object twice (spool while hashing, then decode from the
spool), and the script goes to the server through psycopg (backups.postgres.sql_loader) instead of psql. This
measures what that costs, in one run, on the bench database of bench_pipeline (its bench_small tenant,
~50 MB; BENCH_RESTORE_LARGE=1 adds bench_large, the 500 MB-class tenant the target is for):

(a) tool     - `zstd -dc <object> | psql -q -1 -v ON_ERROR_STOP=1` into a fresh scratch database;
(b) project  - `restore_verify` in a fresh Python process: spool + digest + scratch database (with what the
               tenant uses from public) + load + row-count check + drop. Its wall time, and its peak RSS.

Prints the median of BENCH_REPEATS (3) runs of each, the ratio (b)/(a), and peak memory of both.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import bench_pipeline as pipeline  # noqa: E402 - after the path is set

PYTHON = sys.executable
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
MAX_RATIO = 1.15  # target: a verified restore within 1.15x of the raw pipeline
MAX_RSS_MB = 150

CHILD = r"""
import json, resource, sys, time
import django
django.setup()
from backups.models import BackupRecord
from backups.restore.run import restore_verify
record = BackupRecord.objects.get(pk=int(sys.argv[1]))
started = time.perf_counter()
report = restore_verify(schema=record.schema_name, record=record)
seconds = time.perf_counter() - started
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "rss_kib": hwm, "ok": not report.mismatches}))
"""


def tool_restore(path: Path) -> tuple[float, int]:
    """(a) wall time and psql's peak RSS (KiB) of `zstd -dc | psql` into a scratch database."""
    from backups.postgres import pgtools

    env = pgtools.libpq_env()
    bins = pgtools.binaries()
    dbname = f"bench_restore_tool_{os.getpid()}"
    subprocess.run([PYTHON, str(ROOT / "scripts" / "services.py"), "createdb", dbname], check=True, cwd=ROOT,
                   capture_output=True)
    rss_file = pipeline.OUT_DIR / "psql.rss"
    rss_file.parent.mkdir(parents=True, exist_ok=True)
    psql = [str(Path(bins.pg_dump).with_name("psql")), "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-d", dbname]
    script = (f"set -o pipefail; zstd -dc -q {shlex.quote(str(path))} | "
              f"{shlex.join(pipeline.rss_wrapper(rss_file) + psql)} > /dev/null")
    try:
        started = time.perf_counter()
        subprocess.run(["bash", "-c", script], env=env, check=True)
        seconds = time.perf_counter() - started
    finally:
        subprocess.run([PYTHON, str(ROOT / "scripts" / "services.py"), "dropdb", dbname], cwd=ROOT,
                       capture_output=True)
    return seconds, int(rss_file.read_text().split()[-1])


def project_restore(record_id: int) -> tuple[float, int]:
    """(b) restore_verify's wall time (Django's start-up excluded) and its process's peak RSS (KiB)."""
    proc = subprocess.run([PYTHON, "-c", CHILD, str(record_id)], env=pipeline.child_env(), cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"restore_verify failed: {proc.stderr.strip()[-2000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if not report["ok"]:
        raise RuntimeError("restore_verify's row counts did not match the manifest")
    return report["seconds"], report["rss_kib"]


def main() -> None:
    pipeline.prepare_database()
    from backups.backup.run import backup_run
    from backups.catalog.records import backup_record_create
    from backups.models import BackupRecord

    specs = pipeline.TENANTS if os.environ.get("BENCH_RESTORE_LARGE") else pipeline.TENANTS[:1]
    with pipeline.exclusive():
        for spec in specs:
            data = pipeline.ensure_tenant(spec)
            record = backup_run(record_id=backup_record_create(schema_name=spec.schema).pk)
            if record.status != BackupRecord.Status.SUCCEEDED:
                raise RuntimeError(f"backup of {spec.schema} failed: {record.error}")
            stored = pipeline.STORE_DIR / record.storage_key
            try:
                tool, ours = [], []
                for index in range(REPEATS):
                    for kind in ("tool", "ours") if index % 2 == 0 else ("ours", "tool"):
                        if kind == "tool":
                            tool.append(tool_restore(stored))
                        else:
                            ours.append(project_restore(record.pk))
                t, o = statistics.median(s for s, _ in tool), statistics.median(s for s, _ in ours)
                t_rss, o_rss = max(r for _, r in tool), max(r for _, r in ours)
                print(f"\n{spec.schema}: {data.relation_bytes / 1e6:.0f} MB in relations, object "
                      f"{record.size / 1e6:.1f} MB")
                print(f"  (a) zstd -dc | psql        {t:7.2f} s   psql peak RSS {t_rss / 1024:6.1f} MiB")
                print(f"  (b) verified restore       {o:7.2f} s   Python peak RSS {o_rss / 1024:6.1f} MiB")
                # the target is for the 500 MB class: on the small tenant, (b)'s fixed costs (creating and
                # dropping the scratch database, building what it uses from public) weigh, (a) has neither
                verdict = ("PASS" if o / t <= MAX_RATIO else "FAIL") if spec is pipeline.TENANTS[-1] else "info"
                print(f"  ratio (b)/(a) {o / t:.2f}  {verdict} "
                      f"(target <= {MAX_RATIO} on {pipeline.TENANTS[-1].schema}); Python RSS "
                      f"{'PASS' if o_rss / 1024 <= MAX_RSS_MB else 'FAIL'} (target <= {MAX_RSS_MB} MiB)", flush=True)
            finally:
                pipeline.remove_stored(record.storage_key)
                record.delete()


def run() -> None:
    """In a child process, so its Django set-up stays out of the runner's interpreter."""
    proc = subprocess.run([PYTHON, str(Path(__file__).resolve())], cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"bench_restore exited with status {proc.returncode}")


if __name__ == "__main__":
    main()
