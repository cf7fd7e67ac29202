"""pg_dump's per-call catalog cost: one small schema's `pg_dump -n` vs. its share of one whole-database dump.

One run, on a PRIVATE PostgreSQL cluster the benchmark starts itself (data in var/bench-cluster, kept between
runs; server binaries from BACKUPS_PG_BIN_DIR or /usr/lib/postgresql/15/bin, run as an unprivileged user when
we are root, like scripts/services.py; fsync off, max_locks_per_transaction 1024, a free port on 127.0.0.1):

1. databases cat_10, cat_100 and cat_1000 hold 10, 100 and 1,000 tenant schemas of 10 small tables each
   (a bigint identity primary key, two text columns, a timestamptz, one foreign key, 5 rows), built once with
   plain SQL and reused - the same as measuring at 10 and 100 schemas before creating the rest: pg_dump reads
   one database's catalog;
2. in each database:
   - per schema: `pg_dump -n <one small schema> | zstd -3 -T1 > /dev/null`, median of 5 (different schemas);
   - whole database: `pg_dump | zstd -3 -T1 > /dev/null` once, divided by the number of schemas;
   - prints both and how many times its share the per-schema call costs;
   and in cat_1000 a batched alternative: one `pg_dump -Fc -n s1 ... -n s50` plus one
   `pg_restore -n s -f - | zstd` per schema, per schema;
3. one PASS/FAIL line per target; stops the cluster (its data directory stays for the next run).

Environment: BACKUPS_PG_BIN_DIR (its initdb, pg_ctl, pg_dump, pg_restore, psql), BENCH_CATALOG_KEEP=0 to delete
the data directory at the end.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "var" / "bench-cluster"
LOG_FILE = ROOT / "var" / "bench-cluster.log"
SIZES = (10, 100, 1000)
TABLES_PER_SCHEMA = 10
ROWS_PER_TABLE = 5
REPEATS = 5
BATCH = 50
DATA_VERSION = "bench_catalog v1"  # comment on each complete database; bump when the generated schemas change
CONF = ("\n# bench_catalog\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
        "max_locks_per_transaction = 1024\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
        "shared_buffers = 128MB\nmax_wal_size = 256MB\nmin_wal_size = 32MB\n")

# Targets: how much a per-tenant call may cost over its share of a whole-database dump at 1,000 tenants,
# and how much the per-tenant call may grow from 100 to 1,000 tenants.
MAX_OVERHEAD_RATIO_1000 = 10.0
MAX_GROWTH_100_TO_1000 = 2.0


def _services():
    """scripts/services.py as a module (free_port, run_as_unprivileged, make_traversable, running_private_pg)."""
    spec = importlib.util.spec_from_file_location("bench_services", ROOT / "scripts" / "services.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def server_bin_dir() -> Path:
    for candidate in (os.environ.get("BACKUPS_PG_BIN_DIR", ""), "/usr/lib/postgresql/15/bin"):
        if candidate and (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    raise RuntimeError("No PostgreSQL server binaries (initdb, pg_ctl) found: set BACKUPS_PG_BIN_DIR.")


class Cluster:
    """A private cluster on DATA_DIR, started for the benchmark and stopped at the end."""

    def __init__(self, data_dir: Path | None = None, log_file: Path | None = None,
                 settings: dict[str, str] | None = None) -> None:
        self.data_dir, self.log_file = data_dir or DATA_DIR, log_file or LOG_FILE  # bench_scale has its own
        self.settings = settings or {}  # written to bench.conf (included last) on every start: changes apply
        self.svc = _services()
        self.bin = server_bin_dir()
        self.as_user = self.svc.run_as_unprivileged()
        self.port = 0

    def start(self) -> None:
        svc, as_user = self.svc, self.as_user
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.touch()
        if as_user:
            for path in (self.data_dir, self.log_file):
                os.chown(path, as_user["user"], as_user["group"])
            svc.make_traversable(self.data_dir)
            svc.make_traversable(self.bin)
        self.data_dir.chmod(0o700)
        if not (self.data_dir / "PG_VERSION").exists():
            code, out = svc.run([str(self.bin / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                                 "--encoding=UTF8", "--locale=C", "--no-sync"], cwd=self.data_dir, **as_user)
            if code != 0:
                raise RuntimeError(f"initdb failed: {out[-2000:]}")
            with (self.data_dir / "postgresql.conf").open("a") as conf:
                conf.write(CONF)
            print(f"  initdb: new cluster in {self.data_dir.relative_to(ROOT)}")
        changed = self._write_settings()
        if running := svc.running_private_pg(self.data_dir):
            if not changed:
                self.port = running[1]
                print(f"  reusing the cluster already running on port {self.port}")
                return
            print(f"  restarting the private cluster (pid {running[0]}) for {self.settings}")
            self.stop()
        self.port = svc.free_port()
        code, out = svc.run([str(self.bin / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file), "-w",
                             "-t", "60", "-o", f"-p {self.port}", "start"], cwd=self.data_dir,
                            start_new_session=True, **as_user)
        if code != 0 or not svc.running_private_pg(self.data_dir):
            raise RuntimeError(f"pg_ctl start failed (see {self.log_file}): {out[-2000:]}")
        settings = {"max_locks_per_transaction": "1024", **self.settings}
        print(f"  private cluster started on 127.0.0.1:{self.port} ({self.bin}), fsync off, "
              + ", ".join(f"{k} {v}" for k, v in settings.items()))

    def _write_settings(self) -> bool:
        """Write self.settings to bench.conf, included at the end of postgresql.conf; True when it changed."""
        main = self.data_dir / "postgresql.conf"
        include = "\ninclude_if_exists = 'bench.conf'\n"
        if self.settings and include not in main.read_text():
            with main.open("a") as f:
                f.write(include)
        extra = self.data_dir / "bench.conf"
        text = "".join(f"{k} = {v}\n" for k, v in sorted(self.settings.items()))
        old = extra.read_text() if extra.exists() else ""
        if text == old:
            return False
        extra.write_text(text)
        if self.as_user:
            os.chown(extra, self.as_user["user"], self.as_user["group"])
        return True

    def stop(self) -> None:
        if self.svc.running_private_pg(self.data_dir):
            self.svc.run([str(self.bin / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"],
                         cwd=self.data_dir, **self.as_user)
        print(f"  private cluster stopped (data kept in {self.data_dir.relative_to(ROOT)})"
              if os.environ.get("BENCH_CATALOG_KEEP", "1") != "0" else "  private cluster stopped")
        if os.environ.get("BENCH_CATALOG_KEEP", "1") == "0":
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres"):
        import psycopg

        return psycopg.connect(self.url(dbname), autocommit=True)

    def client(self, name: str) -> str:
        """pg_dump / pg_restore / psql: BACKUPS_PG_BIN_DIR's when set, else the server's directory's."""
        configured = os.environ.get("BACKUPS_PG_BIN_DIR", "")
        for directory in (configured, str(self.bin)):
            if directory and (Path(directory) / name).is_file():
                return str(Path(directory) / name)
        return shutil.which(name) or name


def schema_name(i: int) -> str:
    return f"t{i:04d}"


def build_database(cluster: Cluster, schemas: int) -> None:
    """cat_<schemas> with `schemas` tenant schemas of TABLES_PER_SCHEMA tables each, unless already complete."""
    db = f"cat_{schemas}"
    with cluster.connect() as conn:
        row = conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                           (db,)).fetchone()
        if row and row[0] == DATA_VERSION:
            return
        if row:
            conn.execute(f'DROP DATABASE "{db}"')
        conn.execute(f'CREATE DATABASE "{db}"')
    t0 = time.perf_counter()
    ddl = []
    for t in range(1, TABLES_PER_SCHEMA + 1):
        ref = f", parent_id bigint REFERENCES %1$I.tbl_{t - 1:02d}(id)" if t > 1 else ""
        ddl.append(f"CREATE TABLE %1$I.tbl_{t:02d} (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
                   f"name text NOT NULL, notes text, created_at timestamptz NOT NULL DEFAULT now(){ref}); "
                   f"INSERT INTO %1$I.tbl_{t:02d} (name, notes) SELECT 'row ' || g, repeat('x', 40) "
                   f"FROM generate_series(1, {ROWS_PER_TABLE}) g;")
    body = " ".join(ddl).replace("'", "''")
    with cluster.connect(db) as conn:
        for start in range(1, schemas + 1, 100):
            stop = min(start + 99, schemas)
            conn.execute(
                f"DO $$ DECLARE s text; BEGIN FOR i IN {start}..{stop} LOOP s := 't' || lpad(i::text, 4, '0'); "
                f"EXECUTE format('CREATE SCHEMA %I', s); EXECUTE format('{body}', s); END LOOP; END $$"
            )
        conn.execute("VACUUM ANALYZE")
        conn.execute(f"COMMENT ON DATABASE \"{db}\" IS '{DATA_VERSION}'")
    print(f"  built {db}: {schemas:,} schemas x {TABLES_PER_SCHEMA} tables in {time.perf_counter() - t0:.1f} s")


def timed_shell(cmd: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(["bash", "-c", "set -o pipefail; " + cmd], check=True)
    return time.perf_counter() - t0


def measure(cluster: Cluster, schemas: int) -> dict:
    db = f"cat_{schemas}"
    url = cluster.url(db)
    pg_dump = cluster.client("pg_dump")
    with cluster.connect(db) as conn:
        relations = conn.execute("SELECT count(*) FROM pg_class").fetchone()[0]
    # warm the server's and the OS's caches (not counted)
    timed_shell(f"{pg_dump} '{url}' -n {schema_name(1)} > /dev/null")
    picks = [schema_name(1 + (k * schemas) // REPEATS) for k in range(REPEATS)]
    per_schema = [timed_shell(f"{pg_dump} '{url}' -n {s} --no-owner --no-acl | zstd -3 -T1 -q > /dev/null")
                  for s in picks]
    whole = timed_shell(f"{pg_dump} '{url}' --no-owner --no-acl | zstd -3 -T1 -q > /dev/null")
    one = statistics.median(per_schema)
    share = whole / schemas
    print(f"\n--- {schemas:,} tenant schemas ({relations:,} rows in pg_class) ---")
    print(f"  pg_dump -n <one schema> | zstd: median {one * 1000:,.0f} ms "
          f"(runs {', '.join(f'{x * 1000:.0f}' for x in per_schema)} ms)")
    print(f"  whole-database pg_dump | zstd: {whole:,.2f} s -> {share * 1000:,.1f} ms per schema")
    print(f"  the per-schema call costs {one / share:,.1f}x its share of the whole-database dump")
    return {"one": one, "whole": whole, "share": share, "relations": relations}


def measure_batched(cluster: Cluster, schemas: int) -> float:
    """One custom-format pg_dump of BATCH schemas, then one pg_restore -n per schema: seconds per schema."""
    db = f"cat_{schemas}"
    url = cluster.url(db)
    pg_dump, pg_restore = cluster.client("pg_dump"), cluster.client("pg_restore")
    names = [schema_name(i) for i in range(1, BATCH + 1)]
    archive = ROOT / "var" / "bench-catalog-batch.dump"
    flags = " ".join(f"-n {s}" for s in names)
    try:
        dump = timed_shell(f"{pg_dump} '{url}' -Fc -Z0 --no-owner --no-acl {flags} -f {archive}")
        split = sum(timed_shell(f"{pg_restore} --no-owner --no-acl -n {s} -f - {archive} | zstd -3 -T1 -q "
                                "> /dev/null") for s in names)
    finally:
        archive.unlink(missing_ok=True)
    per = (dump + split) / BATCH
    print(f"  batched: one pg_dump -Fc of {BATCH} schemas {dump:.2f} s + {BATCH} x pg_restore -n | zstd "
          f"{split:.2f} s -> {per * 1000:,.1f} ms per schema (pg_restore -n leaves out CREATE SCHEMA only)")
    return per


def run() -> None:
    print("bench_catalog: pg_dump's per-call catalog cost on a private cluster")
    print("load average at start: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
          + f" on {os.cpu_count()} CPUs (other work on the machine inflates the wall times)")
    cluster = Cluster()
    cluster.start()
    try:
        results = {}
        for schemas in SIZES:
            build_database(cluster, schemas)
            results[schemas] = measure(cluster, schemas)
        batched = measure_batched(cluster, SIZES[-1])
        small, big = results[100], results[1000]
        print("\n=== summary ===")
        print(f"  {'schemas':>8} {'pg_class':>9} {'pg_dump -n':>11} {'share of whole':>15} {'ratio':>7}")
        for schemas, r in results.items():
            print(f"  {schemas:>8,} {r['relations']:>9,} {r['one'] * 1000:>9.0f}ms {r['share'] * 1000:>13.1f}ms "
                  f"{r['one'] / r['share']:>6.1f}x")
        print(f"  at 1,000 schemas a per-tenant dump of every tenant costs {big['one'] * 1000:,.0f} s in all "
              f"(1,000 calls) vs {big['whole']:,.1f} s for one whole-database dump; batched by {BATCH}: "
              f"{batched * 1000:,.0f} s")
        checks = [
            (f"per-schema call at 1,000 schemas costs {big['one'] / big['share']:.1f}x its share of the "
             f"whole-database dump (<= {MAX_OVERHEAD_RATIO_1000:.0f}x)", big["one"] / big["share"]
             <= MAX_OVERHEAD_RATIO_1000),
            (f"per-schema call grows {big['one'] / small['one']:.2f}x from 100 to 1,000 schemas "
             f"(<= {MAX_GROWTH_100_TO_1000:.1f}x)", big["one"] / small["one"] <= MAX_GROWTH_100_TO_1000),
        ]
        for text, ok in checks:
            print(f"{'PASS' if ok else 'FAIL'}: {text}")
    finally:
        cluster.stop()
    print("load average at end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    run()
