"""One dispatcher tick over a large tenant table: the project's dispatch_due_backups vs. the same work in raw SQL.

One run, on its own database (tenant_backups_bench_dispatch, kept between runs; on a private cluster unless
BENCH_DISPATCH_PRIVATE=0, see run()) and Redis database 14
(its keys under the CELERY_QUEUE_PREFIX "bench-dispatch.", deleted before and after):

1. for each scenario (tenants, due): 100,000/1,000, 10,000/1,000, 100,000/100, 100,000/5,000, 100,000/10,000
   - fills tenants_clinica with INSERT ... SELECT generate_series (daily schedules, next_backup_at in the
     future for the others and in the past for the due ones, whose schemas are bt_due_<k>);
   - the due tenants' schemas (bare, with a django_migrations table, as the readiness check wants) are
     created once, 5,000 of them, and reused;
   - (a) raw floor: the same claim done set-based over psycopg: SELECT ... FOR UPDATE SKIP LOCKED, the
     readiness query, INSERT ... SELECT unnest() of the records and of the events, UPDATE ... FROM unnest(),
     COMMIT;
   - (b) project: dispatch_due_backups(now=..., enqueue=False), with DEBUG off as in production, timed per
     statement through an execute wrapper (plus COMMIT; the insert+advance statements go through psycopg's
     pipeline, past the wrapper, so their server time shows inside the rest, with Python's);
   - the state is reset between runs (records and events deleted, next_backup_at put back, VACUUM), REPEATS
     times each, medians reported;
   - (c) publish: what the tick sends once it commits, backups_publish_on_commit(records) (run_backup_batch
     messages with batched dumps on; else one fan_out_backups task per BACKUPS_FANOUT_BATCH records, or the
     chains themselves for a small tick) to Redis; then the batches'
     work, backups_fan_out over every batch in this process (one chain.apply_async each), against a raw
     redis-py LPUSH of the same number of same-sized messages;
2. EXPLAIN ANALYZE of the claim SELECT, the readiness query and the bulk_update on the main scenario;
3. a scaling table and one PASS/FAIL line per target.

The Django part runs in a child process (`python bench/bench_dispatch.py --child`) so its DATABASE_URL and
REDIS_URL do not leak into other benchmarks run by bench/run.py in the same interpreter.

Environment: DATABASE_URL (its server is used; the database name is replaced), REDIS_URL (its server is used;
the database number is replaced by BENCH_DISPATCH_REDIS_DB, default 14), BENCH_REPEATS (default 3),
BENCH_DISPATCH_SCENARIOS ("100000:10000,..." to run only those), BENCH_DISPATCH_PROFILE=1 (cProfile one more
tick per scenario).
"""

from __future__ import annotations

import os
import secrets
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script too
from bench.common import child_env, purge_prefix, run_in_child  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "tenant_backups_bench_dispatch"
REDIS_DB = int(os.environ.get("BENCH_DISPATCH_REDIS_DB", "14"))
KEY_PREFIX = "bench-dispatch."  # CELERY_QUEUE_PREFIX: our keys only; cleaned by prefix, never FLUSHDB
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
ALL_SCENARIOS = ((100_000, 1_000), (10_000, 1_000), (100_000, 100), (100_000, 5_000), (100_000, 10_000))
# BENCH_DISPATCH_SCENARIOS="100000:10000,..." runs only those (the PASS/FAIL lines need them all)
SCENARIOS = tuple(tuple(int(n) for n in part.split(":")) for part in
                  os.environ.get("BENCH_DISPATCH_SCENARIOS", "").split(",") if part) or ALL_SCENARIOS
PROFILE = os.environ.get("BENCH_DISPATCH_PROFILE") == "1"  # cProfile one more project tick per scenario
MAIN = (100_000, 1_000)
MAX_DUE = max(due for _, due in ALL_SCENARIOS)

# Targets.
MAX_TICK_SECONDS = 1.0  # one tick, 100,000 tenants, 1,000 due
MAX_TENANT_GROWTH = 1.5  # tick(100k/1k) / tick(10k/1k): the tenant count must hardly matter
# The record columns the raw tick and the overdue fill both insert with INSERT ... SELECT.
INSERT_RECORDS = ("INSERT INTO backups_backuprecord (tenant_id, tenant_uid, schema_name, file_name, storage_backend, "
                  "storage_key, format, compression, encryption, sha256, plain_sha256, status, backup_type, slot, "
                  "requested_by, created_at, error, task_id, stage, bytes_done, attempts, manifest) ")
MAX_OVERDUE_SECONDS = 1.0  # one overdue check over 100,000 tenants with history (runs every 15 minutes)
MAX_SMALL_TICK_SHARE = 0.5  # tick(100k/100) / tick(100k/1k): the due count must


def bench_env() -> dict[str, str]:
    """The child's environment: the bench database and the bench Redis database."""
    # BACKUPS_DISPATCH_BATCH (default 5,000) would claim the 10,000-due scenario in two ticks: one tick claims all
    # DEBUG off, as in production: with it on, Django's cursor wrapper formats and keeps every statement (a
    # 10,000-tenant tick's are megabytes)
    return child_env(database=BENCH_DB, redis_db=REDIS_DB, key_prefix=KEY_PREFIX,
                     BACKUPS_DISPATCH_BATCH=str(MAX_DUE), DJANGO_DEBUG="0",
                     DJANGO_SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY") or secrets.token_urlsafe(50))


def run() -> None:
    """Entry point for bench/run.py: create the database, run the measurements in a child process.

    By default on a PRIVATE cluster (bench_catalog.Cluster on var/bench-dispatch-cluster, kept between runs, a
    free port, stopped at the end), so the shared server's other users neither disturb nor suffer the
    measurement; BENCH_DISPATCH_PRIVATE=0 uses the server of DATABASE_URL instead."""
    if os.environ.get("BENCH_DISPATCH_PRIVATE", "1") == "0":
        run_in_child(__file__, database=BENCH_DB, env=bench_env())
        return
    from bench.bench_catalog import Cluster

    cluster = Cluster(ROOT / "var" / "bench-dispatch-cluster", ROOT / "var" / "bench-dispatch-cluster.log")
    cluster.start()
    saved = os.environ.get("DATABASE_URL")
    try:
        os.environ["DATABASE_URL"] = cluster.url(BENCH_DB)
        run_in_child(__file__, database=BENCH_DB, env=bench_env())
    finally:
        if saved is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = saved
        cluster.stop()


# --------------------------------------------------------------------------- child process


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def purge(client) -> None:
    """Delete this benchmark's keys from its Redis database."""
    purge_prefix(client, KEY_PREFIX)


def vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Bench:
    """Everything the child does, with Django set up."""

    def __init__(self) -> None:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate_schemas", shared=True, verbosity=0)
        import psycopg
        import redis
        from django.conf import settings

        self.db_url = os.environ["DATABASE_URL"]
        self.raw = psycopg.connect(self.db_url, autocommit=False)
        self.admin = psycopg.connect(self.db_url, autocommit=True)
        self.redis = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        self.results: dict[tuple[int, int], dict] = {}

    # ----------------------------------------------------------------- setup

    def ensure_due_schemas(self) -> None:
        """bt_due_1 .. bt_due_MAX_DUE, each with an empty django_migrations table (created once, reused)."""
        have = self.admin.execute(
            "SELECT count(*) FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid "
            "WHERE n.nspname LIKE 'bt\\_due\\_%%' AND c.relname = 'django_migrations'"
        ).fetchone()[0]
        if have >= MAX_DUE:
            print(f"  reusing {have:,} due-tenant schemas")
            return
        t0 = time.perf_counter()
        for start in range(1, MAX_DUE + 1, 1000):
            self.admin.execute(
                f"DO $$ BEGIN FOR i IN {start}..{min(start + 999, MAX_DUE)} LOOP "
                "EXECUTE format('CREATE SCHEMA IF NOT EXISTS bt_due_%s', i); "
                "EXECUTE format('CREATE TABLE IF NOT EXISTS bt_due_%s.django_migrations (id bigserial PRIMARY KEY, "
                "app varchar(255) NOT NULL, name varchar(255) NOT NULL, applied timestamptz NOT NULL)', i); "
                "END LOOP; END $$"
            )
        print(f"  created {MAX_DUE:,} due-tenant schemas with a django_migrations table in "
              f"{time.perf_counter() - t0:.1f} s")

    def fill_tenants(self, tenants: int, due: int, now) -> float:
        """Replace the tenant table's rows: `due` of `tenants` due (every step-th id), the rest in the future."""
        step = tenants // due
        t0 = time.perf_counter()
        self.admin.execute("TRUNCATE backups_backupevent, backups_backuprecord, tenants_domain, tenants_clinica "
                           "RESTART IDENTITY CASCADE")
        self.admin.execute(
            "INSERT INTO tenants_clinica (tenant_uid, schema_name, backup_schedule, backup_time, backup_timezone, "
            "backup_keep_daily, backup_keep_weekly, backup_keep_monthly, nombre, created_at, next_backup_at) "
            "SELECT gen_random_uuid(), "
            "CASE WHEN i %% %(step)s = 0 THEN 'bt_due_' || (i / %(step)s) ELSE 'bt_' || i END, "
            "'daily', time '02:00', 'Europe/Madrid', 7, 4, 12, 'Bench clinic ' || i, %(now)s, "
            "CASE WHEN i %% %(step)s = 0 THEN %(now)s - make_interval(secs => (i / %(step)s) %% 300 + 1) "
            "ELSE %(now)s + make_interval(mins => 1 + i %% 1440) END "
            "FROM generate_series(1, %(n)s) AS i",
            {"step": step, "now": now, "n": tenants},
        )
        self.admin.execute("VACUUM ANALYZE tenants_clinica")
        self.admin.execute("VACUUM ANALYZE backups_backuprecord")
        self.admin.execute("VACUUM ANALYZE backups_backupevent")
        return time.perf_counter() - t0

    def reset(self, now) -> None:
        """Undo one tick: no records or events, the due tenants due again, dead tuples vacuumed."""
        self.admin.execute("DELETE FROM backups_backupevent")
        self.admin.execute("DELETE FROM backups_backuprecord")
        self.admin.execute(
            "UPDATE tenants_clinica SET backup_schedule = 'daily', "
            "next_backup_at = %s - make_interval(secs => substr(schema_name, 8)::int %% 300 + 1) "
            "WHERE schema_name LIKE 'bt\\_due\\_%%'", (now,),
        )
        self.admin.execute("VACUUM tenants_clinica")
        self.admin.execute("VACUUM backups_backuprecord")
        self.admin.execute("VACUUM backups_backupevent")

    # ----------------------------------------------------------------- raw floor

    def raw_tick(self, now, expected: int) -> dict[str, float]:
        """The dispatcher's claim done set-based over psycopg, committed; per-statement times."""
        from django.conf import settings

        conn, times = self.raw, {}
        batch = settings.BACKUPS_DISPATCH_BATCH

        def timed(name, sql, params=None):
            t0 = time.perf_counter()
            cur = conn.execute(sql, params)
            rows = cur.fetchall() if cur.description else None
            times[name] = times.get(name, 0.0) + time.perf_counter() - t0
            return rows

        t_all = time.perf_counter()
        due = timed("select", "SELECT id, schema_name, next_backup_at, tenant_uid FROM tenants_clinica "
                    "WHERE next_backup_at <= %s AND backup_schedule <> 'disabled' AND schema_name <> 'public' "
                    "ORDER BY next_backup_at LIMIT %s FOR UPDATE OF tenants_clinica SKIP LOCKED", (now, batch))
        schemas = [row[1] for row in due]
        ready = {row[0] for row in timed(
            "readiness", "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = 'django_migrations' AND c.relkind = 'r' AND n.nspname = ANY(%s::name[])", (schemas,))}
        due = [row for row in due if row[1] in ready]
        ids, names, slots = [r[0] for r in due], [r[1] for r in due], [r[2] for r in due]
        uids = [r[3] for r in due]
        records = timed(
            "insert records",
            INSERT_RECORDS +
            "SELECT u.id, u.uid, u.s, f.name, 'local', u.s || '/' || f.name, 'sql', 'zstd', '', '', '', 'queued', "
            "'automatic', u.slot, '{\"scheduler\": true}', now(), '', '', '', 0, 0, '{}' "
            "FROM unnest(%s::bigint[], %s::uuid[], %s::text[], %s::timestamptz[]) AS u(id, uid, s, slot), "
            "LATERAL (SELECT 'auto-sql-' || u.s || '-' || to_char(u.slot AT TIME ZONE 'UTC', 'YYYY-MM-DD-HH24MISS') "
            "|| '.sql.zst' AS name) f RETURNING id, tenant_id, schema_name, slot",
            (ids, uids, names, slots),
        )
        timed("insert events",
              "INSERT INTO backups_backupevent (record_id, tenant_id, schema_name, action, actor, details, created_at) "
              "SELECT u.r, u.t, u.s, 'create', '{\"scheduler\": true}', jsonb_build_object('slot', u.slot), now() "
              "FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::timestamptz[]) AS u(r, t, s, slot)",
              ([r[0] for r in records], [r[1] for r in records], [r[2] for r in records], [r[3] for r in records]))
        timed("update tenants",
              "UPDATE tenants_clinica t SET next_backup_at = u.nxt FROM unnest(%s::bigint[], %s::timestamptz[]) "
              "AS u(id, nxt) WHERE t.id = u.id", (ids, [s + _ONE_DAY for s in slots]))
        t0 = time.perf_counter()
        conn.commit()
        times["commit"] = time.perf_counter() - t0
        times["total"] = time.perf_counter() - t_all
        if len(records) != expected:
            raise RuntimeError(f"raw tick created {len(records)} records, expected {expected}")
        return times

    # ----------------------------------------------------------------- project tick

    def project_tick(self, now, expected: int, *, trace_memory: bool = False) -> tuple[dict[str, float], list]:
        """dispatch_due_backups(now=now, enqueue=False), with per-statement times."""
        import tracemalloc

        from django.db import connection
        from django_tenants.utils import get_public_schema_name, schema_context

        from backups.schedule.dispatch import dispatch_due_backups

        times: dict[str, float] = {}
        self.last_sql: dict[str, tuple[str, object]] = {}

        def classify(sql: str) -> str:
            if "FOR UPDATE" in sql:
                return "select"
            if sql.startswith("WITH u AS"):
                return "insert+advance"
            if "django_migrations" in sql:
                return "readiness"
            if sql.startswith('SELECT "backups_backuprecord"'):
                return "taken"
            if sql.startswith('INSERT INTO "backups_backuprecord"'):
                return "insert records"
            if sql.startswith('INSERT INTO "backups_backupevent"'):
                return "insert events"
            if sql.startswith('UPDATE "tenants_clinica"'):
                return "update tenants"
            return "other sql"

        def wrapper(execute, sql, params, many, context):
            name = classify(sql)
            t0 = time.perf_counter()
            try:
                return execute(sql, params, many, context)
            finally:
                times[name] = times.get(name, 0.0) + time.perf_counter() - t0
                self.last_sql[name] = (sql, params)

        original_commit = connection.commit

        def timed_commit():
            t0 = time.perf_counter()
            try:
                original_commit()
            finally:
                times["commit"] = times.get("commit", 0.0) + time.perf_counter() - t0

        connection.commit = timed_commit
        from backups.schedule import dispatch

        statement = dispatch._insert_statement

        def kept(*args):  # the chunks' statements go through the driver's pipeline, past execute_wrapper
            sql, params = statement(*args)
            self.last_sql["insert+advance"] = (sql, params)
            times["chunks"] = times.get("chunks", 0) + 1
            return sql, params

        dispatch._insert_statement = kept
        if trace_memory:
            tracemalloc.start()
        try:
            with schema_context(get_public_schema_name()), connection.execute_wrapper(wrapper):
                t0, c0 = time.perf_counter(), time.process_time()
                result = dispatch_due_backups(now=now, enqueue=False)
                times["total"] = time.perf_counter() - t0
                cpu = time.process_time() - c0
        finally:
            del connection.commit
            dispatch._insert_statement = statement
            if trace_memory:
                times["py_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
                tracemalloc.stop()
        timed = (v for k, v in times.items() if k not in ("total", "py_peak_mib", "chunks"))
        times["python"] = times["total"] - sum(timed)
        times["cpu"] = cpu
        if len(result.created) != expected or result.skipped_unmigrated:
            raise RuntimeError(f"the tick created {len(result.created)} records (expected {expected}), "
                               f"skipped {len(result.skipped_unmigrated)} as unmigrated")
        return times, result.records

    # ----------------------------------------------------------------- enqueue

    def enqueue(self, records) -> dict[str, float]:
        """The tick's publish (fan_out_backups batches), the batches' chains, against raw LPUSH floors."""
        from django.conf import settings

        from backups.backup.enqueue import backup_message, backups_fan_out, backups_publish_on_commit

        purge(self.redis)
        t0 = time.perf_counter()
        # what the tick sends once it commits (its insert already set enqueued_at); outside a transaction the
        # on_commit runs at once
        backups_publish_on_commit(records)
        tick_publish = time.perf_counter() - t0
        batches = self.redis.llen(KEY_PREFIX + "backups.dispatch")
        size = settings.BACKUPS_FANOUT_BATCH
        ids = [r.pk for r in records]
        t0 = time.perf_counter()
        for i in range(0, len(ids), size) if batches else ():  # what the dispatch workers do with the batches
            backups_fan_out(record_ids=ids[i:i + size])
        fan_out = time.perf_counter() - t0
        queued = self.redis.llen(KEY_PREFIX + "backups.dump")
        sample = self.redis.lindex(KEY_PREFIX + "backups.dump", 0) or b"x" * 1500
        purge(self.redis)
        # the apply_async loop alone (messages built the same way, one publish each)
        t0 = time.perf_counter()
        for record in records:
            backup_message(record).apply_async()
        loop = time.perf_counter() - t0
        purge(self.redis)
        # raw floor: one LPUSH per message (what a publish needs at least), then one pipelined batch
        t0 = time.perf_counter()
        for _ in records:
            self.redis.lpush(KEY_PREFIX + "raw", sample)
        raw_each = time.perf_counter() - t0
        self.redis.delete(KEY_PREFIX + "raw")
        t0 = time.perf_counter()
        pipe = self.redis.pipeline(transaction=False)
        for _ in records:
            pipe.lpush(KEY_PREFIX + "raw", sample)
        pipe.execute()
        raw_pipe = time.perf_counter() - t0
        purge(self.redis)
        from backups.backup.batch.run import batch_sizes, batching_enabled

        if batching_enabled():  # the tick sends run_backup_batch messages straight to the dump queue, no fan-out
            expected_batches, expected_queued = 0, -(-len(records) // batch_sizes(len(records)))
        else:
            expected_batches = -(-len(records) // size) if len(records) > size else 0
            expected_queued = len(records)
        if queued != expected_queued or batches != expected_batches:
            raise RuntimeError(f"{batches} fan-out batches and {queued} dump messages were sent, expected "
                               f"{expected_batches} and {expected_queued}")
        return {"enqueue": tick_publish, "batches": batches, "fan_out": fan_out, "apply_async loop": loop,
                "raw lpush": raw_each, "raw pipelined": raw_pipe, "message bytes": len(sample), "queued": queued}

    # ----------------------------------------------------------------- overdue check

    def overdue(self, tenants: int = 100_000, records_each: int = 3, failing_every: int = 100) -> None:
        """overdue_tenants() over a fleet with history: `records_each` automatic records per tenant, the newest
        failed for one tenant in `failing_every`, one tenant in `failing_every` never claimed (stalled)."""
        from datetime import timedelta

        from django.utils import timezone

        from backups.catalog.selectors import FAILING, STALLED, overdue_tenants

        now = timezone.now()
        self.fill_tenants(tenants, tenants // failing_every, now)
        self.admin.execute("UPDATE tenants_clinica SET next_backup_at = %s WHERE schema_name LIKE 'bt\\_due\\_%%'",
                           (now - timedelta(hours=5),))  # never claimed: stalled
        t0 = time.perf_counter()
        self.admin.execute(
            INSERT_RECORDS +
            "SELECT t.id, t.tenant_uid, t.schema_name, 'f' || t.id || '-' || k, 'local', t.schema_name || '/f' || k, "
            "'sql', 'zstd', "
            "'', '', '', CASE WHEN k = 0 AND t.id %% %(every)s = 1 THEN 'failed' ELSE 'succeeded' END, 'automatic', "
            "%(now)s - make_interval(days => k, hours => 6), '{}', %(now)s, "
            "CASE WHEN k = 0 AND t.id %% %(every)s = 1 THEN 'pg_dump: boom' ELSE '' END, '', '', 0, 1, '{}' "
            "FROM tenants_clinica t, generate_series(0, %(n)s - 1) AS k",
            {"every": failing_every, "now": now, "n": records_each},
        )
        self.admin.execute("VACUUM ANALYZE backups_backuprecord")
        built = time.perf_counter() - t0
        from django_tenants.utils import get_public_schema_name, schema_context

        runs, found = [], []
        with schema_context(get_public_schema_name()):
            for _ in range(REPEATS + 1):
                t0 = time.perf_counter()
                found = overdue_tenants(now=now)
                runs.append(time.perf_counter() - t0)
        runs = runs[1:]  # the first warms the cache
        reasons = {reason: sum(1 for o in found if o.reason == reason) for reason in (STALLED, FAILING)}
        print(f"\n--- overdue check: {tenants:,} tenants, {tenants * records_each:,} records "
              f"(built in {built:.1f} s) ---")
        print(f"  overdue_tenants(): median {ms(statistics.median(runs))} (runs {', '.join(ms(r) for r in runs)}); "
              f"found {reasons[STALLED]:,} stalled, {reasons[FAILING]:,} failing")
        expected = tenants // failing_every
        ok = reasons[STALLED] == expected and reasons[FAILING] == expected
        print(f"{'PASS' if ok else 'FAIL'}: the check finds every stalled and failing tenant ({expected:,} each)")
        print(f"{'PASS' if statistics.median(runs) < MAX_OVERDUE_SECONDS else 'FAIL'}: overdue check over "
              f"{tenants:,} tenants {ms(statistics.median(runs))} < {MAX_OVERDUE_SECONDS:.0f} s")
        self.admin.execute("TRUNCATE backups_backupevent, backups_restorejob, backups_backuprecord")

    # ----------------------------------------------------------------- EXPLAIN

    def explain(self, now) -> None:
        """EXPLAIN ANALYZE the tick's statements (the claim with its readiness, then records + events + advance in one),
        in a rolled-back transaction."""
        from django.db import connection, transaction

        print("\n  EXPLAIN ANALYZE (main scenario, rolled back):")
        for name in ("select", "insert+advance"):
            sql, params = self.last_sql[name]
            with transaction.atomic(), connection.cursor() as cur:
                cur.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, params)
                plan = [row[0] for row in cur.fetchall()]
                transaction.set_rollback(True)
            print(f"    -- {name} ({len(sql):,} chars of SQL)")
            for line in plan[:14]:
                print(f"       {line[:150]}{' ...' if len(line) > 150 else ''}")
            if len(plan) > 14:
                print(f"       ... {len(plan) - 14} more lines")

    def profile(self, now, due: int) -> None:
        """One more tick under cProfile: where its Python time goes (BENCH_DISPATCH_PROFILE=1)."""
        import cProfile
        import pstats

        from django_tenants.utils import get_public_schema_name, schema_context

        from backups.schedule.dispatch import dispatch_due_backups

        profiler = cProfile.Profile()
        with schema_context(get_public_schema_name()):
            profiler.enable()
            dispatch_due_backups(now=now, enqueue=False)
            profiler.disable()
        self.reset(now)
        print("\n  cProfile of one dispatch_due_backups (top 30 by own time, then by time with callees):")
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(30)

    # ----------------------------------------------------------------- scenario

    def scenario(self, tenants: int, due: int) -> dict:
        from django.utils import timezone

        print(f"\n--- {tenants:,} tenants, {due:,} due ---")
        now = timezone.now()
        fill = self.fill_tenants(tenants, due, now)
        print(f"  tenant rows inserted + VACUUM ANALYZE in {fill:.2f} s")
        # warm-up (not counted): one raw tick and one project tick
        self.raw_tick(now, due)
        self.reset(now)
        self.project_tick(now, due)
        self.reset(now)
        raws, projects, records = [], [], []
        for _ in range(REPEATS):
            raws.append(self.raw_tick(now, due))
            self.reset(now)
            times, records = self.project_tick(now, due)
            projects.append(times)
            if _ < REPEATS - 1:
                self.reset(now)
        enq = self.enqueue(records)
        self.reset(now)
        if (tenants, due) == MAIN:
            self.explain(now)  # on the due state; each statement rolled back
        mem, _ = self.project_tick(now, due, trace_memory=True)
        self.reset(now)
        if PROFILE:
            self.profile(now, due)

        def med(runs, key):
            return statistics.median(r.get(key, 0.0) for r in runs)

        keys = ("select", "readiness", "taken", "insert records", "insert events", "update tenants", "insert+advance",
                "other sql",
                "commit", "python")
        raw_total, proj_total = med(raws, "total"), med(projects, "total")
        print(f"  raw SQL floor (psycopg, set-based, committed): median {ms(raw_total)} "
              f"(runs {', '.join(ms(r['total']) for r in raws)})")
        print("      " + " | ".join(f"{k} {ms(med(raws, k))}" for k in keys if med(raws, k)))
        print(f"  project dispatch_due_backups(enqueue=False): median {ms(proj_total)} "
              f"(runs {', '.join(ms(r['total']) for r in projects)})")
        print("      " + " | ".join(f"{_LABEL.get(k, k)} {ms(med(projects, k))}" for k in keys if med(projects, k))
              + f" ({med(projects, 'chunks'):.0f} insert+advance statements, pipelined)")
        print(f"      CPU time of the Django process during the tick: median {ms(med(projects, 'cpu'))} "
              "(insensitive to other load on the machine)")
        print(f"  ratio project / raw: {proj_total / raw_total:.1f}x")
        print(f"  the tick's publish ({enq['queued']:,} messages on the dump queue, {enq['batches']} fan_out_backups "
              f"batches): {ms(enq['enqueue'])}")
        print(f"  the batches' work (backups_fan_out over every batch, one after the other): {ms(enq['fan_out'])}; "
              f"apply_async loop alone {ms(enq['apply_async loop'])} "
              f"({enq['apply_async loop'] / due * 1e6:,.0f} us/chain)")
        print(f"  raw Redis floor, {due:,} x {enq['message bytes']:,}-byte messages: LPUSH one by one "
              f"{ms(enq['raw lpush'])}, pipelined {ms(enq['raw pipelined'])}; ratio apply_async loop / LPUSH "
              f"one by one: {enq['apply_async loop'] / enq['raw lpush']:.1f}x")
        print(f"  full tick (claim + publish): {ms(proj_total + enq['enqueue'])}; every chain on the dump queue "
              f"(tick + the batches on one dispatch process): {ms(proj_total + enq['enqueue'] + enq['fan_out'])}")
        print(f"  Python allocations peak during one tick (tracemalloc): {mem['py_peak_mib']:.1f} MiB; "
              f"child process VmHWM so far {vm_hwm_mib():.0f} MiB")
        result = {"raw": raw_total, "project": proj_total, "enqueue": enq["enqueue"], "fan_out": enq["fan_out"],
                  "apply_async": enq["apply_async loop"], "raw_lpush": enq["raw lpush"],
                  "select": med(projects, "select"), "update": med(projects, "insert+advance"),
                  "python": med(projects, "python")}
        self.results[(tenants, due)] = result
        return result

    def report(self) -> None:
        print("\n=== scaling (medians) ===")
        print(f"  {'tenants':>9} {'due':>6} {'raw SQL':>10} {'project':>10} {'ratio':>6} {'per due':>9} "
              f"{'publish':>10} {'full tick':>10} {'fan-out':>10}")
        for (tenants, due), r in self.results.items():
            print(f"  {tenants:>9,} {due:>6,} {r['raw'] * 1000:>8.1f}ms {r['project'] * 1000:>8.1f}ms "
                  f"{r['project'] / r['raw']:>5.1f}x {r['project'] / due * 1e6:>6.0f}us "
                  f"{r['enqueue'] * 1000:>8.1f}ms {(r['project'] + r['enqueue']) * 1000:>8.1f}ms "
                  f"{r['fan_out'] * 1000:>8.1f}ms")
        if any(key not in self.results for key in ALL_SCENARIOS):
            print("  (the PASS/FAIL lines need every scenario: BENCH_DISPATCH_SCENARIOS is set)")
            return
        main, small_n = self.results[MAIN], self.results[(10_000, 1_000)]
        few, many = self.results[(100_000, 100)], self.results[(100_000, 5_000)]
        checks = [
            (f"claim tick, 100,000 tenants / 1,000 due: {ms(main['project'])} < {MAX_TICK_SECONDS:.0f} s",
             main["project"] < MAX_TICK_SECONDS),
            (f"full tick incl. publish, 100,000 / 1,000: {ms(main['project'] + main['enqueue'])} < "
             f"{MAX_TICK_SECONDS:.0f} s", main["project"] + main["enqueue"] < MAX_TICK_SECONDS),
            (f"issue 13: full tick incl. publish, 100,000 / 10,000 due: "
             f"{ms(self.results[(100_000, 10_000)]['project'] + self.results[(100_000, 10_000)]['enqueue'])} < "
             f"{MAX_TICK_SECONDS:.0f} s", self.results[(100_000, 10_000)]["project"]
             + self.results[(100_000, 10_000)]["enqueue"] < MAX_TICK_SECONDS),
            (f"tenant count hardly matters: tick(100k/1k) / tick(10k/1k) = "
             f"{main['project'] / small_n['project']:.2f} <= {MAX_TENANT_GROWTH}",
             main["project"] / small_n["project"] <= MAX_TENANT_GROWTH),
            (f"due count drives it: tick(100k/100) / tick(100k/1k) = {few['project'] / main['project']:.2f} <= "
             f"{MAX_SMALL_TICK_SHARE}, tick(100k/5k) / tick(100k/1k) = {many['project'] / main['project']:.2f}",
             few["project"] / main["project"] <= MAX_SMALL_TICK_SHARE),
        ]
        for text, ok in checks:
            print(f"{'PASS' if ok else 'FAIL'}: {text}")


_ONE_DAY = None
# the project's insert+advance statements run in psycopg's pipeline while Python names the next chunk: their
# server time overlaps the Python time, and only the wait for the last ones shows, inside this figure
_LABEL = {"python": "python + pipelined insert+advance"}


def child() -> int:
    global _ONE_DAY
    from datetime import timedelta

    _ONE_DAY = timedelta(days=1)
    print(f"bench_dispatch: database {urlsplit(os.environ['DATABASE_URL']).path.lstrip('/')}, "
          f"Redis db {REDIS_DB}, {REPEATS} repeats per scenario")
    print("load average at start: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
          + f" on {os.cpu_count()} CPUs (other work on the machine inflates the wall times)")
    bench = Bench()
    purge(bench.redis)
    try:
        bench.ensure_due_schemas()
        for tenants, due in SCENARIOS:
            bench.scenario(tenants, due)
        bench.report()
        if SCENARIOS == ALL_SCENARIOS:
            bench.overdue()
        print("load average at end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    finally:
        purge(bench.redis)
    return 0


if __name__ == "__main__":
    if "--child" in sys.argv:
        sys.exit(child())
    sys.path.insert(0, str(ROOT))
    run()
