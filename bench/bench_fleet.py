"""A fleet of 200 demo-sized tenants backed up end to end by one Celery worker vs. a shell loop of pg_dump | zstd.

One run, on its own database (tenant_backups_bench_fleet, kept between runs, its 200 tenants reused) and Redis
database 12 (its keys under the CELERY_QUEUE_PREFIX "bench-fleet.", deleted before and after):

1. builds the fleet once: one template tenant the normal way (ORM save -> migrate, then
   clinic.demo.fill_clinic(patients=300)), then 199 clones made by replaying the template's `pg_dump -n`
   through one psql with the schema name replaced, and their tenants_clinica rows inserted with SQL;
2. measures, in this order:
   (a) tool, serial   - `for s in ...; do pg_dump -n $s | zstd -3 -T1 > dir/$s.sql.zst; done` in bash;
   (b) tool, 2 at once - the same command per schema through `xargs -P 2` (the worker's parallelism);
   (c) project         - one real worker (project.processes.start_worker, -c 2, BACKUPS_MAX_CONCURRENT_DUMPS=2);
                         backup_record_create + backups_enqueue for the 200 tenants, wall time until every record
                         is succeeded (and until every tenant's last_backup_at moved: the chains' second link);
                         the worker's peak RSS: VmHWM of its main process and of each pool process;
3. prints the wall times, the ratios, per-backup means and one PASS/FAIL line per target;
4. removes the backup files it wrote (var/bench-fleet) and the bench's backup records.

The Django part runs in a child process (`python bench/bench_fleet.py --child`) so its DATABASE_URL and REDIS_URL
do not leak into other benchmarks run by bench/run.py in the same interpreter.

Environment: DATABASE_URL and REDIS_URL (their servers are used; the database name/number are replaced),
BACKUPS_PG_BIN_DIR as written by scripts/services.py, BENCH_FLEET_REDIS_DB (default 12).
"""

from __future__ import annotations

import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script too
from bench.common import child_env, purge_prefix, run_in_child  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "tenant_backups_bench_fleet"
REDIS_DB = int(os.environ.get("BENCH_FLEET_REDIS_DB", "12"))
KEY_PREFIX = "bench-fleet."  # CELERY_QUEUE_PREFIX: our keys only; cleaned by prefix, never FLUSHDB
STALL_SECONDS = 120  # no backup finished for this long: the messages were lost (someone flushed the Redis db?)
OUT_DIR = ROOT / "var" / "bench-fleet"
STORE_DIR = OUT_DIR / "store"
TOOL_DIR = OUT_DIR / "tool"
TENANTS = 200
PATIENTS = 300
TEMPLATE = "fleet_000"
SCHEMAS = [f"fleet_{i:03d}" for i in range(TENANTS)]
CONCURRENCY = 2
MAX_DUMPS = 2
WORKER_NAME = "benchfleet"
TIMEOUT_SECONDS = 600

# Targets.
MAX_RATIO_SERIAL = 1.0  # the worker (2 processes) must beat the serial shell loop
MAX_RATIO_PARALLEL = 1.5  # and stay within 1.5x of the shell at the same parallelism
MAX_WORKER_RSS_MIB = 400  # main + pool processes, summed VmHWM


def bench_env() -> dict[str, str]:
    """The child's environment: the bench database and the bench Redis database."""
    return child_env(database=BENCH_DB, redis_db=REDIS_DB, key_prefix=KEY_PREFIX,
                     BACKUPS_LOCAL_ROOT=str(STORE_DIR), BACKUPS_MAX_CONCURRENT_DUMPS=str(MAX_DUMPS))


def run() -> None:
    """Entry point for bench/run.py: create the database, run the measurements in a child process."""
    run_in_child(__file__, database=BENCH_DB, env=bench_env())


# --------------------------------------------------------------------------- child process


def purge(client) -> None:
    """Delete this benchmark's keys from its Redis database."""
    purge_prefix(client, KEY_PREFIX)


def mib(kib: int) -> str:
    return f"{kib / 1024:,.0f} MiB"


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            out[key] = value.strip()
    except OSError:
        pass
    return out


def children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def proc_cpu(pid: int, *, with_children: bool) -> float:
    """utime + stime of a process (and of its waited-for children), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if with_children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def libpq_args() -> tuple[list[str], dict[str, str]]:
    """pg_dump/psql connection arguments for the bench database, and their environment."""
    url = urlsplit(os.environ["DATABASE_URL"])
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = url.password
    args = ["-h", url.hostname or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "postgres",
            "-d", url.path.lstrip("/")]
    return args, env


def bin_path(name: str) -> str:
    bin_dir = os.environ.get("BACKUPS_PG_BIN_DIR", "")
    return str(Path(bin_dir) / name) if bin_dir else shutil.which(name) or name


class Fleet:
    def __init__(self) -> None:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate_schemas", shared=True, verbosity=0)
        import redis
        from django.conf import settings

        from backups.postgres import pgtools

        self.admin = pgtools.connect(autocommit=True)
        self.redis = redis.Redis.from_url(settings.CELERY_BROKER_URL)

    # ----------------------------------------------------------------- setup

    def fleet_ready(self) -> bool:
        tenants = self.admin.execute("SELECT count(*) FROM tenants_clinica WHERE schema_name LIKE 'fleet\\_%%'"
                                     ).fetchone()[0]
        migrated = self.admin.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname LIKE 'fleet\\_%%' AND c.relname = 'clinic_invoice'").fetchone()[0]
        return tenants == TENANTS and migrated == TENANTS

    def build(self) -> None:
        from django.db import transaction
        from django_tenants.utils import get_tenant_model, schema_context

        from clinic.demo import fill_clinic

        Tenant = get_tenant_model()
        t0 = time.perf_counter()
        # start clean: drop any half-built fleet
        for (schema,) in self.admin.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'fleet\\_%%'"
                                            ).fetchall():
            self.admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        self.admin.execute("DELETE FROM backups_backupevent")
        self.admin.execute("DELETE FROM backups_backuprecord")
        self.admin.execute("DELETE FROM tenants_domain")
        self.admin.execute("DELETE FROM tenants_clinica")
        if not Tenant.objects.filter(schema_name="public").exists():
            Tenant.objects.create(schema_name="public", nombre="Public (operators)")
        template = Tenant(schema_name=TEMPLATE, nombre="Fleet clinic 000")
        template.save(verbosity=0)  # creates and migrates the schema
        with schema_context(TEMPLATE), transaction.atomic():
            counts = fill_clinic(TEMPLATE, patients=PATIENTS)
        t1 = time.perf_counter()
        print(f"  template tenant {TEMPLATE}: created, migrated and filled in {t1 - t0:.1f} s "
              f"({', '.join(f'{v} {k}' for k, v in counts.items())})")
        args, env = libpq_args()
        dump = subprocess.run([bin_path("pg_dump"), *args, "-n", TEMPLATE, "--no-owner", "--no-acl"],
                              check=True, capture_output=True, env=env).stdout.decode()
        script = "".join(dump.replace(TEMPLATE, schema) for schema in SCHEMAS[1:])
        subprocess.run([bin_path("psql"), *args, "-q", "-X", "-v", "ON_ERROR_STOP=1", "-o", "/dev/null"],
                       input=script.encode(), check=True, env=env)
        self.admin.execute(
            "INSERT INTO tenants_clinica (schema_name, backup_schedule, backup_timezone, backup_keep_daily, "
            "backup_keep_weekly, backup_keep_monthly, nombre, created_at) "
            "SELECT s, 'disabled', '', 7, 4, 12, 'Fleet clinic ' || right(s, 3), now() FROM unnest(%s::text[]) AS s",
            (SCHEMAS[1:],),
        )
        self.admin.execute("ANALYZE")
        print(f"  {TENANTS - 1} clones replayed from one {len(dump) / 1e6:.1f} MB pg_dump through one psql "
              f"in {time.perf_counter() - t1:.1f} s")

    def describe(self) -> None:
        size = self.admin.execute(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'm')", (TEMPLATE,)).fetchone()[0] or 0
        size = int(size)
        tables = self.admin.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r'", (TEMPLATE,)).fetchone()[0]
        relations = self.admin.execute("SELECT count(*) FROM pg_class").fetchone()[0]
        print(f"  fleet: {TENANTS} tenants of {tables} tables, {size / 1e6:.1f} MB on disk each "
              f"(tables + indexes + TOAST); {relations:,} relations in pg_class")

    # ----------------------------------------------------------------- tool

    def tool_run(self, parallel: int) -> tuple[float, int, float]:
        """The shell loop (parallel=1) or the same command through xargs -P; wall s, bytes written, client CPU s."""
        shutil.rmtree(TOOL_DIR, ignore_errors=True)
        TOOL_DIR.mkdir(parents=True)
        args, env = libpq_args()
        pg_dump = shlex.join([bin_path("pg_dump"), *args, "--no-owner", "--no-acl"])
        names = " ".join(SCHEMAS)
        if parallel == 1:
            script = (f"set -o pipefail; for s in {names}; do {pg_dump} -n \"$s\" | zstd -3 -T1 -q "
                      f"> {shlex.quote(str(TOOL_DIR))}/\"$s\".sql.zst || exit 1; done")
        else:
            inner = (f"set -o pipefail; {pg_dump} -n \"$1\" | zstd -3 -T1 -q > {shlex.quote(str(TOOL_DIR))}/\"$1\""
                     ".sql.zst")
            script = (f"printf '%s\\n' {names} | xargs -P {parallel} -I{{}} bash -c {shlex.quote(inner)} _ {{}}")
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(["bash", "-c", script], check=True, env=env)
        seconds = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        files = list(TOOL_DIR.glob("*.sql.zst"))
        if len(files) != TENANTS or any(f.stat().st_size == 0 for f in files):
            raise RuntimeError(f"the shell loop wrote {len(files)} files, expected {TENANTS}")
        return seconds, sum(f.stat().st_size for f in files), cpu

    # ----------------------------------------------------------------- project

    def project_run(self) -> dict:
        from django.db.models import Avg, F, Max, Min, Sum
        from django_tenants.utils import get_tenant_model

        from backups.backup.enqueue import backups_enqueue
        from backups.catalog.records import backup_record_create
        from backups.models import BackupRecord
        from project.celery import app
        from project.processes import start_worker, stop_process, wait_for_worker

        Tenant = get_tenant_model()
        shutil.rmtree(STORE_DIR, ignore_errors=True)
        STORE_DIR.mkdir(parents=True)
        BackupRecord.objects.filter(schema_name__startswith="fleet_").delete()
        Tenant.objects.filter(schema_name__startswith="fleet_").update(last_backup_at=None)
        purge(self.redis)
        log = OUT_DIR / "worker.log"
        log.unlink(missing_ok=True)
        t_start = time.perf_counter()
        worker = start_worker(name=WORKER_NAME, concurrency=CONCURRENCY, log_file=log)
        try:
            wait_for_worker(app, worker, name=WORKER_NAME, timeout=90)
            startup = time.perf_counter() - t_start
            cpu_at_start = sum(proc_cpu(pid, with_children=pid != worker.pid)
                               for pid in [worker.pid, *children(worker.pid)])
            tenants = list(Tenant.objects.filter(schema_name__in=SCHEMAS).order_by("schema_name"))
            t0 = time.perf_counter()
            records = [backup_record_create(schema_name=t.schema_name, tenant=t, fmt="sql", compression="zstd",
                                            requested_by={"bench": "fleet"}) for t in tenants]
            created = time.perf_counter() - t0
            t0 = time.perf_counter()  # the clock starts when the first message is sent
            backups_enqueue(records)  # outside a transaction: sent at once
            enqueued = time.perf_counter() - t0
            ids = [r.pk for r in records]
            succeeded_at = last_at = None
            deadline = time.monotonic() + TIMEOUT_SECONDS
            last_done, progress_at = -1, time.monotonic()
            while time.monotonic() < deadline:
                done = BackupRecord.objects.filter(pk__in=ids, status=BackupRecord.Status.SUCCEEDED).count()
                if done != last_done:
                    last_done, progress_at = done, time.monotonic()
                elif time.monotonic() - progress_at > STALL_SECONDS:
                    raise RuntimeError(f"no backup finished for {STALL_SECONDS} s ({done}/{TENANTS} done): messages "
                                       f"lost? (another process flushing Redis db {REDIS_DB}?) see {log}")
                failed = BackupRecord.objects.filter(pk__in=ids, status=BackupRecord.Status.FAILED).count()
                if failed:
                    raise RuntimeError(f"{failed} backups failed; see {log}")
                if done == TENANTS and succeeded_at is None:
                    succeeded_at = time.perf_counter() - t0
                if succeeded_at is not None and not Tenant.objects.filter(
                        schema_name__in=SCHEMAS, last_backup_at__isnull=True).exists():
                    last_at = time.perf_counter() - t0
                    break
                time.sleep(0.1)
            else:
                raise RuntimeError(f"the backups did not finish within {TIMEOUT_SECONDS} s; see {log}")
            pids = [worker.pid, *children(worker.pid)]
            rss = {pid: int(proc_status(pid).get("VmHWM", "0 kB").split()[0]) for pid in pids}
            names = {pid: proc_status(pid).get("Name", "?") for pid in pids}
            # CPU of the worker: main + pool processes, and pg_dump children the pool processes waited for
            cpu = sum(proc_cpu(pid, with_children=pid != worker.pid) for pid in pids) - cpu_at_start
        finally:
            stop_process(worker)
            purge(self.redis)
        stats = BackupRecord.objects.filter(pk__in=ids).aggregate(
            size=Sum("size"), plain=Sum("plain_size"), first=Min("started_at"), last=Max("finished_at"),
            mean=Avg(F("finished_at") - F("started_at")))
        durations = sorted((r.finished_at - r.started_at).total_seconds()
                           for r in BackupRecord.objects.filter(pk__in=ids))
        stored = sum(f.stat().st_size for f in STORE_DIR.rglob("*.sql.zst"))
        return {"created": created, "cpu": cpu, "startup": startup,
                "enqueue": enqueued, "succeeded": succeeded_at, "finalized": last_at,
                "rss": rss, "names": names, "size": stats["size"], "plain": stats["plain"], "stored": stored,
                "mean_run": stats["mean"].total_seconds(), "median_run": statistics.median(durations),
                "max_run": durations[-1], "span": (stats["last"] - stats["first"]).total_seconds()}

    def cleanup(self) -> None:
        from backups.models import BackupEvent, BackupRecord

        BackupEvent.objects.filter(schema_name__startswith="fleet_").delete()
        BackupRecord.objects.filter(schema_name__startswith="fleet_").delete()
        shutil.rmtree(STORE_DIR, ignore_errors=True)
        shutil.rmtree(TOOL_DIR, ignore_errors=True)  # worker.log stays in var/bench-fleet


def child() -> int:
    print(f"bench_fleet: database {urlsplit(os.environ['DATABASE_URL']).path.lstrip('/')}, Redis db {REDIS_DB}, "
          f"{TENANTS} tenants, worker -c {CONCURRENCY}, BACKUPS_MAX_CONCURRENT_DUMPS={MAX_DUMPS}")
    print("load average at start: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
          + f" on {os.cpu_count()} CPUs (other work on the machine inflates the wall times)")
    fleet = Fleet()
    if fleet.fleet_ready():
        print(f"  reusing the {TENANTS} fleet tenants")
    else:
        fleet.build()
    fleet.describe()
    try:
        serial, serial_bytes, serial_cpu = fleet.tool_run(1)
        print(f"  (a) shell loop, serial:         {serial:6.1f} s  ({serial / TENANTS * 1000:.0f} ms/schema, "
              f"{serial_bytes / 1e6:.1f} MB of .zst); client CPU (bash + pg_dump + zstd) "
              f"{serial_cpu / TENANTS * 1000:.0f} ms/schema")
        par, _, par_cpu = fleet.tool_run(CONCURRENCY)
        print(f"  (b) shell, xargs -P {CONCURRENCY}:          {par:6.1f} s  ({par / TENANTS * 1000:.0f} ms/schema); "
              f"client CPU {par_cpu / TENANTS * 1000:.0f} ms/schema")
        p = fleet.project_run()
        total = p["succeeded"]
        print(f"  (c) project, one worker -c {CONCURRENCY}:   {total:6.1f} s  until all {TENANTS} records succeeded "
              f"({total / TENANTS * 1000:.0f} ms/backup of wall time); {p['finalized']:.1f} s until every "
              f"last_backup_at moved")
        print(f"      not counted: worker start-up {p['startup']:.1f} s, backup_record_create x {TENANTS} "
              f"{p['created']:.2f} s; counted: backups_enqueue of the {TENANTS} chains {p['enqueue']:.2f} s")
        print(f"      per backup (started_at -> finished_at): mean {p['mean_run'] * 1000:.0f} ms, median "
              f"{p['median_run'] * 1000:.0f} ms, max {p['max_run'] * 1000:.0f} ms; first start -> last finish "
              f"{p['span']:.1f} s")
        print(f"      client CPU (worker processes + their pg_dump children): "
              f"{p['cpu'] / TENANTS * 1000:.0f} ms/backup "
              f"vs the shell's {serial_cpu / TENANTS * 1000:.0f} ms/schema ({p['cpu'] / serial_cpu:.2f}x)")
        print(f"      stored {p['stored'] / 1e6:.1f} MB of .zst (records: {p['size'] / 1e6:.1f} MB, raw dumps "
              f"{p['plain'] / 1e6:.1f} MB) vs the shell's {serial_bytes / 1e6:.1f} MB")
        rss_total = sum(p["rss"].values())
        parts = " + ".join(f"{p['names'][pid]}[{pid}] {mib(kib)}" for pid, kib in p["rss"].items())
        print(f"      worker peak RSS (VmHWM): {parts} = {mib(rss_total)}")
        print(f"  ratio project / serial shell loop: {total / serial:.2f}x; project / xargs -P {CONCURRENCY}: "
              f"{total / par:.2f}x")
        checks = [
            (f"one worker -c {CONCURRENCY} vs the serial shell loop: {total / serial:.2f}x <= {MAX_RATIO_SERIAL}",
             total / serial <= MAX_RATIO_SERIAL),
            (f"one worker -c {CONCURRENCY} vs the shell at the same parallelism: {total / par:.2f}x <= "
             f"{MAX_RATIO_PARALLEL}", total / par <= MAX_RATIO_PARALLEL),
            (f"worker peak RSS, main + {CONCURRENCY} pool processes: {mib(rss_total)} <= {MAX_WORKER_RSS_MIB} MiB",
             rss_total / 1024 <= MAX_WORKER_RSS_MIB),
        ]
        for text, ok in checks:
            print(f"{'PASS' if ok else 'FAIL'}: {text}")
    finally:
        fleet.cleanup()
    print("load average at end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    if "--child" in sys.argv:
        sys.exit(child())
    sys.path.insert(0, str(ROOT))
    run()
