"""Tenant files in the backup against `tar | zstd` of the same folder (issue 26's Speed section).

One run, in a child process on its own database (bench_files) with its own MEDIA_ROOT and local backup storage:

1. one tenant, its folder filled with BENCH_FILES_MB (default 1024) MB in files of 32-700 KB (a few thousand):
   half of each file random bytes (images, PDFs: incompressible), half text;
2. `tar -cf - . | zstd -3 -T1 > file` of the tenant's folder, warm cache (the baseline);
3. the first backup's files stage (backups.backup.files.files_backup: digests, new blobs compressed and stored),
   timed in a process of its own, whose peak RSS is read (ru_maxrss);
4. 1% of the files rewritten (new content, new mtime), then the second backup's files stage, timed the same way;
5. prints the times, the ratio to the baseline, the new bytes of the second backup against the first's, and one
   PASS/FAIL line per target: first <= 1.2x tar|zstd; second stores <= 2% of the first's bytes in <= 15% of its
   time; peak RSS <= 150 MB.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import child_env  # noqa: E402

DATABASE = "bench_files"
SCHEMA = "bench_files_clinic"
TOTAL_MB = int(os.environ.get("BENCH_FILES_MB", "1024"))


TEXT = (b"Paciente: Jos\xc3\xa9 Garc\xc3\xada; pieza 36; radiograf\xc3\xada periapical; " * 40)


def _content(rng: random.Random, size: int) -> bytes:
    """Half random bytes (an image, a PDF), half text."""
    half = size // 2
    return rng.randbytes(half) + (TEXT * (1 + (size - half) // len(TEXT)))[: size - half]


def _fill(folder: Path, total: int) -> list[Path]:
    rng = random.Random(26)
    made, written, n = [], 0, 0
    while written < total:
        size = rng.randrange(32 << 10, 700 << 10)
        path = folder / f"xrays/{n // 500:03d}/scan-{n:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_content(rng, size))
        made.append(path)
        written += size
        n += 1
    return made


def _stage(env: dict, mode: str) -> dict:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), mode], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{proc.stdout}\n{proc.stderr}")
    if os.environ.get("BENCH_FILES_PROFILE"):
        print(proc.stderr[-6000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-files-"))
    media, backups = work / "media", work / "backups"
    env = child_env(database=DATABASE, redis_db=11, key_prefix="bench-files.", MEDIA_ROOT=str(media),
                    BACKUPS_LOCAL_ROOT=str(backups), BACKUPS_STORAGE="local", BACKUPS_AGE_RECIPIENTS="")
    try:
        subprocess.run([sys.executable, "scripts/services.py", "dropdb", DATABASE], cwd=ROOT, check=True,
                       capture_output=True)
        subprocess.run([sys.executable, "scripts/services.py", "createdb", DATABASE], cwd=ROOT, check=True,
                       capture_output=True)
        _stage(env, "--setup")
        folder = media / SCHEMA
        files = _fill(folder, TOTAL_MB << 20)
        total = sum(p.stat().st_size for p in files)
        print(f"  {len(files):,} files, {total / 2**20:,.0f} MiB in {folder}", flush=True)
        subprocess.run(f"tar -cf - -C {folder} . | zstd -3 -T1 -q > /dev/null", shell=True, check=True)  # warm
        t0 = time.perf_counter()
        subprocess.run(["bash", "-c", f"set -o pipefail; tar -cf - -C {folder} . | zstd -3 -T1 -q > "
                                      f"{work / 'baseline.tar.zst'}"], check=True)
        baseline = time.perf_counter() - t0
        t0 = time.perf_counter()  # the same, made durable as each blob is (an fsync of the archive)
        subprocess.run(["bash", "-c", f"tar -cf - -C {folder} . | zstd -3 -T1 -q > {work / 'synced.tar.zst'} && "
                                      f"sync {work / 'synced.tar.zst'}"], check=True)
        baseline_synced = time.perf_counter() - t0
        baseline_size = (work / "baseline.tar.zst").stat().st_size
        first = _stage(env, "--backup")
        changed = random.Random(7).sample(files, max(1, len(files) // 100))
        rng = random.Random(8)
        for path in changed:  # new content of the same kind and size
            path.write_bytes(_content(rng, path.stat().st_size))
        second = _stage(env, "--backup")
        print(f"  tar | zstd -3 -T1:      {baseline:7.2f} s  {baseline_size / 2**20:8.1f} MiB "
              f"({baseline_synced:.2f} s with a final sync)", flush=True)
        print(f"  first backup (files):  {first['seconds']:7.2f} s  {first['new_bytes'] / 2**20:8.1f} MiB stored, "
              f"{first['new_blobs']:,} blobs, peak RSS {first['maxrss_mb']:.0f} MB", flush=True)
        print(f"  second, {len(changed)} changed: {second['seconds']:7.2f} s  {second['new_bytes'] / 2**20:8.1f} MiB "
              f"stored, {second['new_blobs']:,} blobs, peak RSS {second['maxrss_mb']:.0f} MB", flush=True)
        ratio = first["seconds"] / baseline
        share_bytes = second["new_bytes"] / max(1, first["new_bytes"])
        share_time = second["seconds"] / first["seconds"]
        peak = max(first["maxrss_mb"], second["maxrss_mb"])
        for ok, line in ((ratio <= 1.2, f"first backup {ratio:.2f}x tar|zstd (target <= 1.2x)"),
                         (share_bytes <= 0.02, f"second stores {share_bytes:.1%} of the first's bytes (<= 2%)"),
                         (share_time <= 0.15, f"second takes {share_time:.1%} of the first's time (<= 15%)"),
                         (peak <= 150, f"peak RSS {peak:.0f} MB (<= 150 MB)")):
            print(f"  {'PASS' if ok else 'FAIL'} {line}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        subprocess.run([sys.executable, "scripts/services.py", "dropdb", DATABASE], cwd=ROOT, capture_output=True)


def _child(mode: str) -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django_tenants.utils import get_tenant_model

    from backups.backup.files import files_backup
    from backups.catalog.records import backup_record_create
    from backups.models import BackupRecord
    from backups.storage import get_storage

    if mode == "--setup":
        call_command("migrate_schemas", shared=True, verbosity=0)
        get_tenant_model()(schema_name=SCHEMA, nombre="Bench files").save(verbosity=0)
        print(json.dumps({}))
        return
    record = backup_record_create(schema_name=SCHEMA, fmt="dump")
    t0 = time.perf_counter()
    if os.environ.get("BENCH_FILES_PROFILE"):
        import cProfile
        import pstats

        with cProfile.Profile() as prof:
            files = files_backup(record=record, storage=get_storage())
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(25)
    else:
        files = files_backup(record=record, storage=get_storage())
    seconds = time.perf_counter() - t0
    BackupRecord.objects.filter(pk=record.pk).update(status="succeeded", manifest={"files": files})
    print(json.dumps({"seconds": seconds, "new_bytes": files["new_bytes"], "new_blobs": files["new_blobs"],
                      "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("--"):
        _child(sys.argv[1])
    else:
        run()
