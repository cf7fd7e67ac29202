"""A fleet pass at 1,000 and 10,000 tenants through real workers, batched dumps, on a PRIVATE cluster.

One run:

1. starts a private PostgreSQL cluster (bench_catalog.Cluster: its own data directory var/bench-scale-cluster,
   kept between runs, fsync off, max_locks_per_transaction 4096 (CLUSTER_SETTINGS, re-applied with a restart
   of that private cluster when they change: the whole-database pg_dump of 10,000 demo tenants locks some
   250,000 relations in one transaction, more than 1024 x 100 connections), a free port; stopped at the end) and uses
   database scale_fleet_<N> on it for the fleet of N tenants (one database per size: pg_dump reads one
   database's catalog), and the Redis of REDIS_URL, database BENCH_SCALE_REDIS_DB (default 12), keys
   under "bench-scale." only;
2. builds the fleet once and grows it: one template tenant the normal way (ORM save -> migrate, then
   clinic.demo.fill_clinic(patients=PATIENTS)), clones made by replaying the template's `pg_dump -n`
   through psql with the schema name replaced, tenants_clinica rows inserted with SQL;
3. at each size N (BENCH_SCALE_SIZES, default "1000,10000"):
   (a) one whole-database `pg_dump | zstd -3 -T1`, divided by N, before and after (c) (the mean is the share:
       on a shared machine the load drifts during a run);
   (a') the same once with the project's pg_dump session options (BACKUPS_PG_DUMP_OPTIONS as PGOPTIONS), for
       comparison: the targets use the plain tool's (a);
   (b) a `pg_dump -n <s> | zstd` loop through `xargs -P CONCURRENCY` over a sample of loop_sample(N) schemas
       (the whole loop at 10,000 tenants would take hours), per tenant;
   (c) the project, the median of BENCH_SCALE_PASSES (default 3) passes: every fleet tenant made due, one real
       worker (-c CONCURRENCY, BACKUPS_MAX_CONCURRENT_DUMPS=CONCURRENCY), one dispatcher tick (dispatch_due_backups,
       which sends run_backup_batch messages) and the wall time until every record succeeded; the worker's peak RSS
       (VmHWM of main + pool processes), the largest pg_dump/pg_restore child seen (VmRSS sampled), and the most
       locks held on the server (pg_locks sampled every second);
4. prints per-tenant costs, the ratio to (a), the growth from the smallest to the largest size, and one
   PASS/FAIL line per target of issue 13.

Environment: REDIS_URL, BACKUPS_PG_BIN_DIR (initdb, pg_ctl, pg_dump...), BENCH_SCALE_SIZES, BENCH_SCALE_KEEP=0 to
delete the cluster's data at the end, BENCH_SCALE_LOOP_SAMPLE schemas timed for (b) (default 40 at 1,000, 4 at 10,000),
BENCH_SCALE_DEBUG=1 to run Django with DEBUG on (off by default, as in
production: DEBUG keeps every connection's last 9,000 queries in memory), BENCH_SCALE_BUILD_ONLY=1 to grow each
size's fleet and stop (building 10,000 tenants takes long: do it once,
ahead of the measurement).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script too
from bench.bench_catalog import Cluster  # noqa: E402
from bench.common import child_env, purge_prefix  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "var" / "bench-scale-cluster"
LOG_FILE = ROOT / "var" / "bench-scale-cluster.log"
OUT_DIR = ROOT / "var" / "bench-scale"
STORE_DIR = OUT_DIR / "store"
BENCH_DB = "scale_fleet"
REDIS_DB = int(os.environ.get("BENCH_SCALE_REDIS_DB", "12"))
KEY_PREFIX = "bench-scale."
SIZES = tuple(int(x) for x in os.environ.get("BENCH_SCALE_SIZES", "1000,10000").split(","))
PATIENTS = 20
TEMPLATE = "scale_00000"
CONCURRENCY = 2
BATCH_SIZE = 1600  # fits 1/2 of this cluster's lock table over 2 dump slots for 13-table tenants
LOOP_SAMPLE = os.environ.get("BENCH_SCALE_LOOP_SAMPLE", "")  # default loop_sample(n); a call takes a minute at 10,000
CLONE_CHUNK = 250
WORKER_NAME = "benchscale"
CLUSTER_SETTINGS = {"max_locks_per_transaction": "4096"}
BUILD_ONLY = os.environ.get("BENCH_SCALE_BUILD_ONLY", "") == "1"
PASSES = int(os.environ.get("BENCH_SCALE_PASSES", "3"))  # (c) is the median of this many passes: the machine drifts

# Targets (issue 13).
MAX_RATIO = 2.0  # fleet pass per tenant / whole-database dump's share
MAX_GROWTH = 1.3  # per-tenant cost at the largest size / at the smallest
MAX_CRON_RATIO = 1.5  # the cron path at default settings / the whole-database dump's share (issue 23)
CRON = os.environ.get("BENCH_SCALE_CRON", "1") != "0"
# what (d) leaves at the product's defaults: the cron path is measured as a deployment without tuning runs it
TUNED = ("BACKUPS_MAX_CONCURRENT_DUMPS", "BACKUPS_BATCH_SIZE", "BACKUPS_DISPATCH_BATCH")
MAX_RSS_MIB = 150


def schema(i: int) -> str:
    return f"scale_{i:05d}"


def loop_sample(n: int) -> int:
    """Schemas timed for (b): BENCH_SCALE_LOOP_SAMPLE, else 40 at 1,000 tenants and 4 at 10,000 (a plain pg_dump -n
    takes about a minute there, most of it one badly planned catalog query, see backups.conf)."""
    return int(LOOP_SAMPLE) if LOOP_SAMPLE else min(40, max(4, 40_000 // n))


def database(n: int) -> str:
    """Each fleet size has its own database: pg_dump reads one database's catalog, so a fleet of 1,000 measured
    in a database that also holds 10,000 tenants would not be a fleet of 1,000."""
    return f"{BENCH_DB}_{n}"


def run() -> None:
    """Entry point for bench/run.py: private cluster, then each size's measurements in a child process."""
    cluster = Cluster(DATA_DIR, LOG_FILE, settings=CLUSTER_SETTINGS)
    cluster.start()
    results = {}
    try:
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        for n in SIZES:
            with cluster.connect() as conn:
                if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database(n),)).fetchone():
                    conn.execute(f'CREATE DATABASE "{database(n)}"')
            env = child_env(database=database(n), redis_db=REDIS_DB, key_prefix=KEY_PREFIX,
                            BACKUPS_LOCAL_ROOT=str(STORE_DIR), BACKUPS_MAX_CONCURRENT_DUMPS=str(CONCURRENCY),
                            BACKUPS_BATCH_SIZE=str(BATCH_SIZE), BACKUPS_DISPATCH_BATCH="1000000",
                            BACKUPS_SPREAD_SECONDS="0", BACKUPS_SPOOL_DIR=str(OUT_DIR / "spool"),
                            BACKUPS_PG_BIN_DIR=os.environ.get("BACKUPS_PG_BIN_DIR", str(cluster.bin)))
            env["DATABASE_URL"] = cluster.url(database(n))
            # production settings: with DEBUG on, Django keeps the last 9,000 queries of every connection (the
            # batches' bulk statements are kilobytes each), which is no worker's memory in production
            env.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
            env["DJANGO_DEBUG"] = os.environ.get("BENCH_SCALE_DEBUG", "0")
            out = OUT_DIR / f"result-{n}.json"
            out.unlink(missing_ok=True)
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(n), str(out)],
                                  env=env, cwd=ROOT)
            if proc.returncode != 0:
                raise RuntimeError(f"bench_scale's child process for {n:,} tenants failed with status "
                                   f"{proc.returncode}")
            if out.exists():
                results[n] = json.loads(out.read_text())
    finally:
        cluster.stop()
        if os.environ.get("BENCH_SCALE_KEEP", "1") == "0":
            shutil.rmtree(DATA_DIR, ignore_errors=True)
    if results:
        summary(results)


# --------------------------------------------------------------------------- child process


def libpq() -> tuple[list[str], dict[str, str]]:
    from urllib.parse import urlsplit

    url = urlsplit(os.environ["DATABASE_URL"])
    args = ["-h", url.hostname, "-p", str(url.port), "-U", url.username or "postgres", "-d", url.path.lstrip("/")]
    return args, dict(os.environ)


def tool(name: str) -> str:
    return str(Path(os.environ["BACKUPS_PG_BIN_DIR"]) / name)


def status(pid: int) -> dict[str, str]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            out[key] = value.strip()
    except OSError:
        pass
    return out


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(x) for x in (task / "children").read_text().split()]
            except OSError:
                kids = []
            out += kids
            todo += kids
    return out


def kib(field: str) -> int:
    return int(field.split()[0]) if field else 0


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

    def size(self) -> int:
        return self.admin.execute("SELECT count(*) FROM tenants_clinica WHERE schema_name LIKE 'scale\\_%%'"
                                  ).fetchone()[0]

    def grow(self, n: int) -> None:
        from django.db import transaction
        from django_tenants.utils import get_tenant_model, schema_context

        from clinic.demo import fill_clinic

        Tenant = get_tenant_model()
        for (stray,) in self.admin.execute(  # left by an interrupted run
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'scale\\_%%' AND nspname NOT IN "
                "(SELECT schema_name FROM tenants_clinica)").fetchall():
            self.admin.execute(f'DROP SCHEMA "{stray}" CASCADE')
        have = self.size()
        if have >= n:
            return
        t0 = time.perf_counter()
        if have == 0:
            if not Tenant.objects.filter(schema_name="public").exists():
                Tenant.objects.create(schema_name="public", nombre="Public (operators)")
            Tenant(schema_name=TEMPLATE, nombre="Scale clinic 0").save(verbosity=0)
            with schema_context(TEMPLATE), transaction.atomic():
                fill_clinic(TEMPLATE, patients=PATIENTS)
            have = 1
        args, env = libpq()
        dump = subprocess.run([tool("pg_dump"), *args, "-n", TEMPLATE, "--no-owner", "--no-acl"], check=True,
                              capture_output=True, env=env).stdout.decode()
        dump = "".join(line for line in dump.splitlines(keepends=True)
                       if not line.startswith(("\\restrict", "\\unrestrict")))  # one psql reads many dumps
        for start in range(have, n, CLONE_CHUNK):
            names = [schema(i) for i in range(start, min(n, start + CLONE_CHUNK))]
            script = "".join(dump.replace(TEMPLATE, s) for s in names)
            subprocess.run([tool("psql"), *args, "-q", "-X", "-1", "-v", "ON_ERROR_STOP=1", "-o", "/dev/null"],
                           input=script.encode(), check=True, env=env)
            self.admin.execute(
                "INSERT INTO tenants_clinica (tenant_uid, schema_name, backup_schedule, backup_timezone, "
                "backup_keep_daily, backup_keep_weekly, backup_keep_monthly, nombre, created_at) "
                "SELECT gen_random_uuid(), s, 'disabled', 'UTC', 7, 4, 12, 'Scale clinic', now() "
                "FROM unnest(%s::text[]) AS s", (names,))
            print(f"    cloned {start + len(names):,}/{n:,} ({time.perf_counter() - t0:.0f} s)", flush=True)
        self.admin.execute("VACUUM ANALYZE")
        print(f"  fleet grown from {have:,} to {n:,} tenants in {time.perf_counter() - t0:.0f} s", flush=True)

    def whole(self, options: str = "") -> float:
        """One whole-database pg_dump | zstd, in seconds; `options`: PGOPTIONS for pg_dump's session."""
        args, env = libpq()
        if options:
            env["PGOPTIONS"] = options
        cmd = f"{shlex.join([tool('pg_dump'), *args, '--no-owner', '--no-acl'])} | zstd -3 -T1 -q > /dev/null"
        t0 = time.perf_counter()
        subprocess.run(["bash", "-c", "set -o pipefail; " + cmd], check=True, env=env)
        return time.perf_counter() - t0

    def loop(self, n: int, sample: int) -> float:
        args, env = libpq()
        names = [schema(1 + (k * (n - 1)) // sample) for k in range(sample)]
        inner = (f"set -o pipefail; {shlex.join([tool('pg_dump'), *args, '--no-owner', '--no-acl'])} -n \"$1\" "
                 "| zstd -3 -T1 -q > /dev/null")
        script = f"printf '%s\\n' {' '.join(names)} | xargs -P {CONCURRENCY} -I{{}} bash -c {shlex.quote(inner)} _ {{}}"
        t0 = time.perf_counter()
        subprocess.run(["bash", "-c", script], check=True, env=env)
        return (time.perf_counter() - t0) / sample

    def make_due(self, n: int):
        """No records, an empty store, the first n tenants due now and the rest disabled; the fleet's queryset."""
        from datetime import time as dtime

        from django.db import connection
        from django.utils import timezone
        from django_tenants.utils import get_tenant_model

        from backups.models import BackupEvent, BackupRecord

        Tenant = get_tenant_model()
        shutil.rmtree(STORE_DIR, ignore_errors=True)
        STORE_DIR.mkdir(parents=True)
        (OUT_DIR / "spool").mkdir(parents=True, exist_ok=True)
        with connection.cursor() as cur:  # the ORM's delete() would load a whole pass's records to collect them
            cur.execute(f"TRUNCATE {BackupEvent._meta.db_table}, {BackupRecord._meta.db_table} CASCADE")
        fleet = Tenant.objects.filter(schema_name__startswith="scale_")
        fleet.update(last_backup_at=None, backup_schedule="disabled", next_backup_at=None)
        due = fleet.filter(schema_name__in=[schema(i) for i in range(n)])
        due.update(backup_schedule="daily", backup_time=dtime(3, 0), backup_timezone="UTC",
                   next_backup_at=timezone.now())
        return fleet

    def cron_pass(self, n: int) -> float:
        """(d) `manage.py run_scheduled_backups` over n due tenants at the product's default settings: wall time."""
        from backups.models import BackupRecord

        fleet = self.make_due(n)
        env = {k: v for k, v in os.environ.items() if k not in TUNED}
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "manage.py", "run_scheduled_backups"], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"run_scheduled_backups failed: {done.stderr[-2000:]}")
        ok = BackupRecord.objects.filter(status=BackupRecord.Status.SUCCEEDED).count()
        if ok != n or fleet.filter(backup_schedule="daily", last_backup_at__isnull=True).exists():
            raise RuntimeError(f"the cron pass backed up {ok} of {n}: {done.stdout[-2000:]}")
        return wall

    def fleet_pass(self, n: int) -> dict:
        from backups.models import BackupRecord
        from backups.schedule.dispatch import dispatch_due_backups
        from project.celery import app
        from project.processes import start_worker, stop_process, wait_for_worker

        fleet = self.make_due(n)
        purge_prefix(self.redis, KEY_PREFIX)
        log = OUT_DIR / "worker.log"
        log.unlink(missing_ok=True)
        worker = start_worker(name=WORKER_NAME, concurrency=CONCURRENCY, log_file=log)
        peaks = {"locks": 0, "child_rss": 0}
        stop = threading.Event()

        def sample() -> None:
            from backups.postgres import pgtools

            with pgtools.connect(autocommit=True) as conn:
                while not stop.is_set():
                    peaks["locks"] = max(peaks["locks"], conn.execute("SELECT count(*) FROM pg_locks").fetchone()[0])
                    for pid in descendants(worker.pid):
                        st = status(pid)
                        if st.get("Name") in ("pg_dump", "pg_restore"):
                            peaks["child_rss"] = max(peaks["child_rss"], kib(st.get("VmRSS", "")))
                    stop.wait(1.0)  # pg_locks of 100,000s of locks is not free either

        try:
            wait_for_worker(app, worker, name=WORKER_NAME, timeout=120)
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            t0 = time.perf_counter()
            tick0 = time.perf_counter()
            dispatch = dispatch_due_backups()
            tick = time.perf_counter() - tick0
            ids = [r.pk for r in dispatch.records]
            if len(ids) != n:
                raise RuntimeError(f"the tick made {len(ids)} records, expected {n}")
            last, progress_at = -1, time.monotonic()
            # polled with cheap queries (every record is this pass's, every daily tenant is due): a filter on the
            # 10,000 ids, built and sent twice a second, took most of a core from the 2 the workers measure on
            records = BackupRecord.objects.all()
            waiting = fleet.filter(backup_schedule="daily", last_backup_at__isnull=True)
            while True:
                done = records.filter(status=BackupRecord.Status.SUCCEEDED).count()
                failed = records.filter(status=BackupRecord.Status.FAILED).count()
                if failed:
                    raise RuntimeError(f"{failed} backups failed; see {log}")
                # done: every record succeeded AND its tenant's last_backup_at moved (the chain's later links ran)
                if done == n and not waiting.exists():
                    break
                if done != last:
                    last, progress_at = done, time.monotonic()
                elif time.monotonic() - progress_at > 900:
                    raise RuntimeError(f"no progress for 900 s ({done}/{n}); see {log}")
                time.sleep(0.5)
            wall = time.perf_counter() - t0
            pids = [worker.pid, *[p for p in descendants(worker.pid) if status(p).get("Name", "").startswith(
                ("python", "celery"))]]
            rss = {pid: kib(status(pid).get("VmHWM", "")) for pid in pids}
        finally:
            stop.set()
            stop_process(worker)
            purge_prefix(self.redis, KEY_PREFIX)
        stored = sum(f.stat().st_size for f in STORE_DIR.rglob("*.zst"))
        return {"wall": wall, "tick": tick, "rss": rss, "locks": peaks["locks"], "child_rss": peaks["child_rss"],
                "stored": stored}


def conf_default(name: str):
    from backups.conf import DEFAULTS

    return DEFAULTS[name]


def child(n: int, out: Path) -> int:
    """Grow this database's fleet to n tenants and measure (a), (b) and (c) at n; results as JSON in `out`."""
    print(f"bench_scale: private cluster {os.environ['DATABASE_URL']}, {n:,} tenants, worker -c {CONCURRENCY}, "
          f"BACKUPS_MAX_CONCURRENT_DUMPS={CONCURRENCY}, BACKUPS_BATCH_SIZE={BATCH_SIZE}")
    print("load average at start: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} CPUs")
    fleet = Fleet()
    budget = fleet.admin.execute("SELECT current_setting('max_locks_per_transaction')::int * "
                                 "(current_setting('max_connections')::int + "
                                 "current_setting('max_prepared_transactions')::int)").fetchone()[0]
    fleet.grow(n)
    if BUILD_ONLY:
        return 0
    relations = fleet.admin.execute("SELECT count(*) FROM pg_class").fetchone()[0]
    print(f"\n--- {n:,} tenants ({relations:,} relations in pg_class) ---", flush=True)
    before = fleet.whole()
    print(f"  (a) whole-database pg_dump | zstd: {before:.1f} s -> {before / n * 1000:.1f} ms per tenant (measured "
          "again after (c); the share is the mean of both, this machine's load drifts)", flush=True)
    from django.conf import settings

    options = settings.BACKUPS_PG_DUMP_OPTIONS
    tuned = fleet.whole(options) if options else float("nan")
    print(f"  (a') the same with the project's pg_dump session options (PGOPTIONS={options!r}): {tuned:.1f} s -> "
          f"{tuned / n * 1000:.1f} ms per tenant (for comparison; the targets use plain (a))", flush=True)
    sample = loop_sample(n)
    loop = fleet.loop(n, sample) if sample else float("nan")  # BENCH_SCALE_LOOP_SAMPLE=0 skips (b)
    print(f"  (b) pg_dump -n | zstd, xargs -P {CONCURRENCY}, {sample} schemas sampled: "
          + (f"{loop * 1000:.0f} ms per tenant (a whole pass: {loop * n / 60:.1f} min)" if sample
             else "skipped (BENCH_SCALE_LOOP_SAMPLE=0)"), flush=True)
    passes = [fleet.fleet_pass(n) for _ in range(PASSES)]
    p = dict(sorted(passes, key=lambda r: r["wall"])[len(passes) // 2])  # the median pass
    p["locks"] = max(r["locks"] for r in passes)
    p["child_rss"] = max(r["child_rss"] for r in passes)
    crons = [fleet.cron_pass(n) for _ in range(PASSES)] if CRON else []
    cron = sorted(crons)[len(crons) // 2] if crons else float("nan")
    after = fleet.whole()
    whole = (before + after) / 2
    print(f"  (a) again, after (c): {after:.1f} s -> {after / n * 1000:.1f} ms per tenant; "
          f"mean {whole / n * 1000:.1f} ms", flush=True)
    per = p["wall"] / n
    rss = sum(p["rss"].values()) / 1024
    largest = max(max(r["rss"].values()) for r in passes) / 1024  # the largest of every pass
    walls = ", ".join(f"{r['wall']:.1f}" for r in passes)
    print(f"  (c) project, dispatcher tick + batched dumps through one worker -c {CONCURRENCY}, median of {PASSES} "
          f"passes ({walls} s): {p['wall']:.1f} s -> {per * 1000:.1f} ms per "
          f"tenant; the tick itself {p['tick']:.2f} s", flush=True)
    print(f"      ratio to (a): {per / (whole / n):.2f}x; to (a'): {per / (tuned / n):.2f}x; "
          f"(b) / (c): {loop / per:.1f}x")
    print("      worker peak RSS (VmHWM): " + ", ".join(f"{pid}: {k / 1024:.0f} MiB" for pid, k in p["rss"].items())
          + f" (largest process {largest:.0f} MiB, sum {rss:.0f} MiB); largest pg_dump/pg_restore child seen "
          f"{p['child_rss'] / 1024:.0f} MiB")
    print(f"      most locks held on the server: {p['locks']:,} of {budget:,} lock slots "
          f"(max_locks_per_transaction x connections)")
    if crons:
        print(f"  (d) the cron path (run_scheduled_backups, default settings: "
              f"{', '.join(f'{k}={conf_default(k)}' for k in TUNED)}), median of {len(crons)} passes "
              f"({', '.join(f'{w:.1f}' for w in crons)} s): {cron / n * 1000:.1f} ms per tenant; ratio to (a): "
              f"{cron / whole:.2f}x", flush=True)
    print("load average at the end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    out.write_text(json.dumps({"cron": cron / n, "per": per,
                               "share": whole / n, "tuned_share": tuned / n, "loop": loop, "rss": largest,
                               "locks": p["locks"], "budget": budget, "tick": p["tick"], "wall": p["wall"],
                               "whole": [before, after]}))
    shutil.rmtree(STORE_DIR, ignore_errors=True)
    return 0


def summary(results: dict[int, dict]) -> None:
    print("\n=== summary ===")
    print(f"  {'tenants':>8} {'fleet/tenant':>13} {'whole share':>12} {'ratio':>6} {'tuned share':>12} "
          f"{'loop/tenant':>12} {'peak RSS':>9} {'locks':>7}")
    for n, r in results.items():
        print(f"  {n:>8,} {r['per'] * 1000:>11.1f}ms {r['share'] * 1000:>10.1f}ms {r['per'] / r['share']:>5.2f}x "
              f"{r.get('tuned_share', float('nan')) * 1000:>10.1f}ms "
              f"{r['loop'] * 1000:>10.0f}ms {r['rss']:>7.0f}Mi {r['locks']:>7,}")
    checks = [(f"{n:,} tenants: fleet pass {r['per'] * 1000:.1f} ms/tenant = {r['per'] / r['share']:.2f}x the "
               f"whole-database share (<= {MAX_RATIO}x)", r["per"] / r["share"] <= MAX_RATIO)
              for n, r in results.items()]
    if len(results) > 1:
        small, big = results[min(results)], results[max(results)]
        growth = big["per"] / small["per"]
        checks.append((f"per-tenant cost {min(results):,} -> {max(results):,} tenants grows {growth:.2f}x "
                       f"(<= {MAX_GROWTH}x)", growth <= MAX_GROWTH))
    checks += [(f"{n:,} tenants: largest worker process peak RSS {r['rss']:.0f} MiB <= {MAX_RSS_MIB} MiB",
                r["rss"] <= MAX_RSS_MIB) for n, r in results.items()]
    checks += [(f"{n:,} tenants: cron path at default settings {r['cron'] * 1000:.1f} ms/tenant = "
                f"{r['cron'] / r['share']:.2f}x the whole-database share (<= {MAX_CRON_RATIO}x)",
                r["cron"] / r["share"] <= MAX_CRON_RATIO) for n, r in results.items()
               if math.isfinite(r.get("cron", math.nan))]
    checks += [(f"{n:,} tenants: most locks held {r['locks']:,} within the lock table {r['budget']:,}",
                r["locks"] <= r["budget"]) for n, r in results.items()]
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")


if __name__ == "__main__":
    if "--child" in sys.argv:
        at = sys.argv.index("--child")
        sys.exit(child(int(sys.argv[at + 1]), Path(sys.argv[at + 2])))
    run()
