"""recover_deployment of BENCH_RECOVER_TENANTS (default 1,000) demo tenants against `pg_restore -j2` of one
whole-database dump of the same data (issue 26's Speed section), on a PRIVATE cluster.

One run:

1. starts a private PostgreSQL cluster (bench_catalog.Cluster on var/bench-recover-cluster: fsync off,
   max_locks_per_transaction 1024, since the whole-database dump locks every table of every tenant in one
   transaction) and database bench_recover on it; the backups go to a fresh local folder;
2. builds the deployment: one template clinic the normal way (ORM save -> migrate, clinic.demo.fill_clinic with
   BENCH_RECOVER_PATIENTS, default 200, and its files), the others cloned by replaying the template's
   `pg_dump -n` with the schema name replaced, their tenant rows inserted with SQL;
3. backs up every tenant (batched dumps, as a tick would) and the public schema (`backup_tenant public`);
4. the baseline: `pg_dump -Fc` of the whole database (not timed), a new empty database, and the wall time of
   `pg_restore -j2 --no-owner --no-acl` into it;
5. the project: the database dropped and created empty, the wall time of `recover_deployment --noinput
   --workers 2` (the same two-way parallelism), its exit status and the tenants it restored;
6. prints both, the ratio, and PASS/FAIL for the target (<= 1.5x).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_catalog import Cluster  # noqa: E402

DATABASE = "bench_recover"
TEMPLATE = "recover_0"
TENANTS = int(os.environ.get("BENCH_RECOVER_TENANTS", "1000"))
PATIENTS = int(os.environ.get("BENCH_RECOVER_PATIENTS", "200"))
CLONE_CHUNK = 100


def _env(port: int, work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"DATABASE_URL": f"postgres://postgres@127.0.0.1:{port}/{DATABASE}", "BACKUPS_STORAGE": "local",
                "BACKUPS_LOCAL_ROOT": str(work / "backups"), "MEDIA_ROOT": str(work / "media"),
                "BACKUPS_LOCK_DATABASE_URL": "", "DJANGO_SETTINGS_MODULE": "project.settings",
                "DJANGO_DEBUG": env.get("DJANGO_DEBUG", "1"), "BACKUPS_BATCH_SIZE": "200", "LOG_LEVEL": "WARNING",
                "BACKUPS_LOG_LEVEL": "WARNING",
                "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")})
    return env


def _pg(env: dict, tool: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(env["BACKUPS_PG_BIN_DIR"]) / tool), "-h", "127.0.0.1", "-U", "postgres",
                           "-p", env["DATABASE_URL"].rsplit(":", 1)[1].split("/")[0], *args], env=env, check=True,
                          **kwargs)


def _fresh_database(env: dict) -> None:
    _pg(env, "psql", "-d", "postgres", "-q", "-c", f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    _pg(env, "psql", "-d", "postgres", "-q", "-c", f"CREATE DATABASE {DATABASE} TEMPLATE template0")


def run() -> None:
    cluster = Cluster(ROOT / "var" / "bench-recover-cluster", ROOT / "var" / "bench-recover-cluster.log")
    work = Path(tempfile.mkdtemp(prefix="bench-recover-"))
    cluster.start()
    try:
        env = _env(cluster.port, work)
        _fresh_database(env)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--build"], env=env, cwd=ROOT, check=True)
        print(f"  {TENANTS:,} tenants built and backed up in {time.perf_counter() - t0:.0f} s", flush=True)
        dump = work / "whole.dump"
        _pg(env, "pg_dump", "-d", DATABASE, "-Fc", "-f", str(dump))
        _fresh_database(env)
        t0 = time.perf_counter()
        _pg(env, "pg_restore", "-j2", "--no-owner", "--no-acl", "-d", DATABASE, str(dump))
        baseline = time.perf_counter() - t0
        print(f"  pg_restore -j2 of the whole-database dump ({dump.stat().st_size / 2**20:.0f} MiB): "
              f"{baseline:.1f} s", flush=True)
        _fresh_database(env)
        shutil.rmtree(work / "media", ignore_errors=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "manage.py", "recover_deployment", "--noinput", "--workers", "2"],
                              env=env, cwd=ROOT, capture_output=True, text=True)
        recovered = time.perf_counter() - t0
        summary = [line for line in proc.stdout.splitlines() if line.startswith(("tenants restored", "public"))]
        print(f"  recover_deployment --workers 2: {recovered:.1f} s, exit {proc.returncode}; "
              + "; ".join(summary[-2:]), flush=True)
        if proc.returncode != 0:
            print(proc.stdout[-3000:] + proc.stderr[-3000:], flush=True)
        ratio = recovered / baseline
        print(f"  {'PASS' if ratio <= 1.5 and proc.returncode == 0 else 'FAIL'} recover_deployment of {TENANTS:,} "
              f"tenants {ratio:.2f}x pg_restore -j2 of one whole-database dump (target <= 1.5x)", flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


def _build() -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import transaction
    from django_tenants.utils import get_tenant_model, schema_context

    from backups.backup.batch.run import batch_backup_run
    from backups.catalog.records import backup_record_create
    from backups.postgres import pgtools
    from clinic.demo import fill_clinic

    call_command("migrate_schemas", shared=True, verbosity=0)
    Tenant = get_tenant_model()
    Tenant.objects.create(schema_name="public", nombre="Public (operators)")
    Tenant(schema_name=TEMPLATE, nombre="Recover clinic 0").save(verbosity=0)
    with schema_context(TEMPLATE), transaction.atomic():
        fill_clinic(TEMPLATE, patients=PATIENTS)
    env = dict(os.environ)
    url = env["DATABASE_URL"]
    port = url.rsplit(":", 1)[1].split("/")[0]
    args = ["-h", "127.0.0.1", "-p", port, "-U", "postgres", "-d", DATABASE]
    bins = Path(env["BACKUPS_PG_BIN_DIR"])
    dump = subprocess.run([str(bins / "pg_dump"), *args, "-n", TEMPLATE, "--no-owner", "--no-acl"], check=True,
                          capture_output=True, env=env).stdout.decode()
    dump = "".join(line for line in dump.splitlines(keepends=True)
                   if not line.startswith(("\\restrict", "\\unrestrict")))
    admin = pgtools.connect(autocommit=True)
    t0 = time.perf_counter()
    for start in range(1, TENANTS, CLONE_CHUNK):
        names = [f"recover_{i}" for i in range(start, min(TENANTS, start + CLONE_CHUNK))]
        subprocess.run([str(bins / "psql"), *args, "-q", "-X", "-1", "-v", "ON_ERROR_STOP=1", "-o", "/dev/null"],
                       input="".join(dump.replace(TEMPLATE, s) for s in names).encode(), check=True, env=env)
        admin.execute(
            "INSERT INTO tenants_clinica (tenant_uid, schema_name, backup_schedule, backup_timezone, "
            "backup_keep_daily, backup_keep_weekly, backup_keep_monthly, nombre, created_at) "
            "SELECT gen_random_uuid(), s, 'disabled', 'UTC', 7, 4, 12, 'Recover clinic', now() "
            "FROM unnest(%s::text[]) AS s", (names,))
    admin.execute("VACUUM ANALYZE")
    print(f"  cloned {TENANTS - 1:,} tenants in {time.perf_counter() - t0:.0f} s", flush=True)
    t0 = time.perf_counter()
    schemas = list(Tenant.objects.exclude(schema_name="public").order_by("schema_name")
                   .values_list("schema_name", flat=True))
    for start in range(0, len(schemas), 200):
        records = [backup_record_create(schema_name=s, fmt="dump") for s in schemas[start:start + 200]]
        result = batch_backup_run(record_ids=[r.pk for r in records])
        if result.failed or result.retry:
            raise RuntimeError(f"batch backup failed: {result}")
    print(f"  backed up {len(schemas):,} tenants in {time.perf_counter() - t0:.0f} s", flush=True)
    call_command("backup_tenant", "public", "--no-progress")


if __name__ == "__main__":
    if sys.argv[1:] == ["--build"]:
        _build()
    else:
        run()
