"""pg_dump | zstd in the shell vs. the project's backup pipeline vs. `manage.py backup_tenant`.

One run, on its own database (tenant_backups_bench, kept between runs), in a child process of the runner
(`python bench/bench_pipeline.py`) so its Django set-up stays out of the other benchmarks:

1. builds (or reuses) two tenants with generated data: bench_small (~50 MB) and bench_large (>= 500 MB),
   measured as pg_total_relation_size summed over the schema's tables; the tenant rows are created through
   the ORM (which creates and migrates the schema), the rows with INSERT ... SELECT generate_series;
2. for each tenant, REPEATS times and in an order rotated every repetition:
   (a) tool     - `pg_dump -n schema | zstd -3 -T1 > file` in bash, the project's pg_dump binary and flags,
                  pg_dump's peak RSS by /usr/bin/time;
   (b) pipeline - backup_record_create + backup_run(record_id) in a fresh Python process (bench/pipeline_child.py):
                  backup_run's wall time, that process's peak RSS and pg_dump's (its child);
   (c) command  - `python manage.py backup_tenant schema`, wall time including Django's start-up;
3. prints a table per tenant (medians) and one PASS/FAIL line per target (a missed target is not an error);
4. removes the backup files it wrote (var/bench-backups) and the bench's backup records; keeps the database.

The machine may be shared: before each timed run the bench waits for a quiet moment, and during it it
measures the CPU that other processes took; a run where they took more than DISTURBED_CORES is made again
(within a time budget) and the report shows that CPU beside every run.

Environment: DATABASE_URL (its server is used; the database name is replaced by BENCH_DATABASE_NAME,
default tenant_backups_bench), BACKUPS_PG_BIN_DIR as written by scripts/services.py; BENCH_REPEATS (3),
BENCH_QUIET_BUSY, BENCH_DISTURBED_CORES, BENCH_QUIET_BUDGET, BENCH_RETRY_BUDGET (see below);
BENCH_PIPELINE_VARIANT=<name> runs (b) with a variant of bench/variants.py (what-if, e.g. zstd_t1).
Runs are serialized by an advisory lock on the bench database; each keeps its files in its own folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BENCH_DB = os.environ.get("BENCH_DATABASE_NAME", "tenant_backups_bench")
OUT_ROOT = ROOT / "var" / "bench-backups"
OUT_DIR = OUT_ROOT / f"run-{os.getpid()}"  # this run's files only
STORE_DIR = OUT_DIR / "store"  # BACKUPS_LOCAL_ROOT of the pipeline and command runs
TOOL_DIR = OUT_DIR / "tool"
PIPELINE_VARIANT = os.environ.get("BENCH_PIPELINE_VARIANT", "")  # run (b) with a variant of bench/variants.py
LOCK_KEY = (0x6265, 0x7069)  # advisory lock on the bench database: one bench_pipeline / tune run at a time
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
MB = 1_000_000
DATA_VERSION = 1  # bump when the generated data changes, so cached schemas are rebuilt

# Targets checked at the end.
MAX_PIPELINE_RATIO = 1.05
MAX_COMMAND_RATIO = 1.15  # `manage.py backup_tenant` end to end (start-up included) on the 500 MB-class tenant
MAX_PYTHON_RSS_MB = 150
MAX_RSS_GROWTH = 0.10  # large tenant's Python peak RSS within 10% of the small one's
MAX_SIZE_DIFF = 0.03  # our .zst within 3% of zstd -3's


# Other people's jobs may share this machine. Before each timed run the bench waits for a quiet moment;
# during it, it measures the CPU taken by processes that are not the run's (nor its PostgreSQL backends);
# a run where others took more than DISTURBED_CORES is made again (within the budgets below).
QUIET_BUSY = float(os.environ.get("BENCH_QUIET_BUSY", "0.15"))  # "quiet": under 15% of all CPUs busy
QUIET_MAX_WAIT = 30.0  # seconds per run
DISTURBED_CORES = float(os.environ.get("BENCH_DISTURBED_CORES", "0.2"))
MAX_ATTEMPTS = 3
QUIET_BUDGET_TOTAL = float(os.environ.get("BENCH_QUIET_BUDGET", "120"))  # seconds of waiting, whole bench
RETRY_BUDGET_TOTAL = float(os.environ.get("BENCH_RETRY_BUDGET", "180"))  # seconds of re-runs, whole bench
BUDGET = {"quiet": QUIET_BUDGET_TOTAL, "retry": RETRY_BUDGET_TOTAL}  # seconds left


@dataclass(frozen=True)
class TenantSpec:
    """A bench tenant: its schema and the on-disk size its generated data must reach."""

    schema: str
    nombre: str
    target_bytes: int


TENANTS = (
    TenantSpec("bench_small", "Bench small clinic", 50 * MB),
    TenantSpec("bench_large", "Bench large clinic", 500 * MB),
)


@dataclass
class TenantData:
    """The state of a tenant's data before the measurements."""

    spec: TenantSpec
    relation_bytes: int
    reused: bool
    build_seconds: float
    dump_bytes: int = 0
    rows: dict[str, int] = field(default_factory=dict)


@dataclass
class Run:
    """One measured run of one kind (tool, pipeline or command)."""

    kind: str
    seconds: float
    size: int
    python_rss_kib: int = 0
    pg_dump_rss_kib: int = 0
    plain_size: int = 0
    cpu_seconds: float = 0.0
    commit_seconds: float = 0.0
    before_pg_dump_seconds: float = 0.0  # backup_run's start to pg_dump's start (record, snapshot, queries)
    dump_seconds: float = 0.0  # pg_dump's start to the end of reading it
    after_dump_seconds: float = 0.0  # flush, fsync, manifest, stat, record update
    busy_before: float = 0.0  # share of all CPUs busy (others' work) just before the run
    others_cores: float = 0.0  # CPU other people's processes used during the run, in cores (0.5 = half a CPU)
    attempts: int = 1
    chunks: int = 0
    mean_chunk_kib: float = 0.0


# --------------------------------------------------------------------------- setup


def bench_database_url() -> str:
    """DATABASE_URL with its database name replaced by the bench database's."""
    url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tenant_backups")
    return urlunsplit(urlsplit(url)._replace(path=f"/{BENCH_DB}"))


def child_env() -> dict[str, str]:
    """Environment of the pipeline and command runs: the bench database and the bench storage folder."""
    env = dict(os.environ)
    env.update({"DATABASE_URL": bench_database_url(), "BACKUPS_LOCAL_ROOT": str(STORE_DIR),
                "DJANGO_SETTINGS_MODULE": "project.settings", "DJANGO_DEBUG": env.get("DJANGO_DEBUG", "1")})
    return env


def prepare_database() -> None:
    """Create the bench database if needed, point Django at it, and migrate the shared apps."""
    subprocess.run([PYTHON, str(ROOT / "scripts" / "services.py"), "createdb", BENCH_DB], check=True, cwd=ROOT)
    os.environ.update({k: v for k, v in child_env().items() if k in
                       ("DATABASE_URL", "BACKUPS_LOCAL_ROOT", "DJANGO_SETTINGS_MODULE", "DJANGO_DEBUG")})
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate_schemas", shared=True, verbosity=0)


def schema_relation_bytes(schema: str) -> int:
    """pg_total_relation_size (heap + TOAST + indexes) summed over the schema's tables."""
    from backups.postgres import pgtools

    with pgtools.connect() as conn:
        row = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN ('r', 'm')",
            (schema,),
        ).fetchone()
    return int(row[0])


def schema_marker(schema: str) -> str | None:
    """The comment bench_pipeline leaves on a schema once its data is complete (None: no schema)."""
    from backups.postgres import pgtools

    with pgtools.connect() as conn:
        row = conn.execute("SELECT coalesce(obj_description(oid, 'pg_namespace'), '') FROM pg_namespace "
                           "WHERE nspname = %s", (schema,)).fetchone()
    return None if row is None else row[0]


def marker_text(spec: TenantSpec) -> str:
    """The completion marker for this spec and generator version."""
    return f"tenant-backups bench data v{DATA_VERSION}, target {spec.target_bytes} bytes, complete"


# Vocabulary of the generated rows: realistic words (compressible) mixed with hashes (not).
NOMBRES = ["María", "José", "Lucía", "Carlos", "Ana", "Javier", "Carmen", "Pablo", "Laura", "Diego", "Elena",
           "Sergio", "Marta", "Andrés", "Sofía", "Miguel", "Isabel", "Raúl", "Paula", "Jorge"]
APELLIDOS = ["García", "Fernández", "González", "Rodríguez", "López", "Martínez", "Sánchez", "Pérez", "Gómez",
             "Martín", "Jiménez", "Ruiz", "Hernández", "Díaz", "Moreno", "Álvarez", "Romero", "Alonso",
             "Gutiérrez", "Navarro"]
WORDS = ["paciente", "refiere", "dolor", "molar", "inferior", "superior", "derecho", "izquierdo", "sensibilidad",
         "frío", "calor", "encía", "sangrado", "caries", "profunda", "obturación", "composite", "endodoncia",
         "corona", "cerámica", "implante", "extracción", "cordal", "radiografía", "panorámica", "revisión",
         "higiene", "limpieza", "sarro", "periodontitis", "ortodoncia", "brackets", "férula", "bruxismo",
         "alergia", "penicilina", "ibuprofeno", "anestesia", "local", "sin", "incidencias", "control", "en",
         "seis", "meses", "presupuesto", "aceptado", "pendiente", "de", "pago", "cita", "urgente", "tras",
         "fractura", "pieza", "prótesis", "removible", "blanqueamiento", "valoración", "inicial", "seguimiento",
         "la", "el", "con"]
MOTIVOS = ["Revisión", "Limpieza", "Dolor", "Empaste", "Endodoncia", "Extracción", "Ortodoncia", "Implante",
           "Urgencia", "Blanqueamiento"]


def _array(values: list[str]) -> str:
    """A SQL text[] literal of plain words."""
    return "'{" + ",".join(f'"{v}"' for v in values) + "}'::text[]"


# Helpers in the bench database's public schema (never in a tenant's schema, so never in its dump).
HELPERS_SQL = f"""
CREATE OR REPLACE FUNCTION public.bench_pick(words text[]) RETURNS text LANGUAGE sql VOLATILE AS
    $$ SELECT words[1 + floor(random() * array_length(words, 1))::int] $$;
CREATE OR REPLACE FUNCTION public.bench_words(n bigint) RETURNS text LANGUAGE sql VOLATILE AS
    $$ SELECT string_agg(public.bench_pick({_array(WORDS)}), ' ') FROM generate_series(1, n) $$;
CREATE OR REPLACE FUNCTION public.bench_random_bytes(seed bigint, blocks bigint) RETURNS bytea
    LANGUAGE sql IMMUTABLE AS
    $$ SELECT string_agg(sha512(int8send(seed * 64 + k)), ''::bytea ORDER BY k) FROM generate_series(1, blocks) AS k $$;
"""

# One batch: n patients, 3 appointments each, 1-2 treatments per appointment, one invoice with a PDF each.
FILL_SQL = f"""
WITH p AS (
    INSERT INTO {{s}}.clinic_patient (nombre, apellidos, email, telefono, fecha_nacimiento, notas, created_at)
    SELECT public.bench_pick({_array(NOMBRES)}),
           public.bench_pick({_array(APELLIDOS)}) || ' ' || public.bench_pick({_array(APELLIDOS)}),
           'paciente.' || substr(md5(random()::text), 1, 10) || '@'
               || public.bench_pick('{{gmail.com,hotmail.com,yahoo.es,outlook.com}}'),
           '+34 6' || lpad(floor(random() * 100000000)::bigint::text, 8, '0'),
           date '1940-01-01' + floor(random() * 25000)::int,
           public.bench_words(1 + g.i % 41) || '. Ref ' || substr(md5(random()::text), 1, 8 + (g.i % 25)::int),
           now() - random() * interval '2000 days'
    FROM generate_series(1, {{n}}) AS g(i)
    RETURNING id
), a AS (
    INSERT INTO {{s}}.clinic_appointment (starts_at, duration_minutes, motivo, status, patient_id)
    SELECT date_trunc('hour', now() - random() * interval '1500 days') + floor(random() * 4) * interval '15 min',
           (ARRAY[15, 30, 45, 60, 90])[1 + floor(random() * 5)::int],
           public.bench_pick({_array(MOTIVOS)}) || ' ' || public.bench_words(1 + (p.id + k.j) % 6),
           public.bench_pick('{{done,done,done,booked,cancelled}}'),
           p.id
    FROM p, generate_series(1, 3) AS k(j)
    RETURNING id, patient_id
), t AS (
    INSERT INTO {{s}}.clinic_treatment (code, description, tooth, price, appointment_id, patient_id)
    SELECT 'D' || (1000 + floor(random() * 8999))::int,
           public.bench_words(3 + (a.id + k.j) % 13),
           CASE WHEN random() < 0.2 THEN NULL ELSE 11 + 10 * floor(random() * 4)::int + floor(random() * 8)::int END,
           round((20 + random() * 980)::numeric, 2),
           a.id, a.patient_id
    FROM a, LATERAL generate_series(1, 1 + (a.id % 2)::int) AS k(j)
    RETURNING 1
), i AS (
    INSERT INTO {{s}}.clinic_invoice (number, issued_at, total, paid, pdf, patient_id)
    SELECT 'F-' || lpad(p.id::text, 9, '0'),
           now() - random() * interval '1500 days',
           round((30 + random() * 2500)::numeric, 2),
           random() < 0.8,
           convert_to('%PDF-1.4' || chr(10) || '1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj' || chr(10)
                      || '2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj' || chr(10)
                      || '3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R >> endobj'
                      || chr(10) || '4 0 obj << /Length ' || (64 * (6 + p.id % 50)) || ' /Filter /FlateDecode >>'
                      || chr(10) || 'stream' || chr(10), 'UTF8')
           || public.bench_random_bytes(p.id, 6 + p.id % 50)
           || convert_to(chr(10) || 'endstream endobj' || chr(10)
                         || 'trailer << /Root 1 0 R /Info << /Title (Factura F-' || p.id
                         || ') /Producer (Clinica) >> >>' || chr(10) || '%%EOF' || chr(10), 'UTF8'),
           p.id
    FROM p
    RETURNING 1
)
SELECT (SELECT count(*) FROM p), (SELECT count(*) FROM a), (SELECT count(*) FROM t), (SELECT count(*) FROM i)
"""

CLINIC_TABLES = ("clinic_patient", "clinic_appointment", "clinic_treatment", "clinic_invoice")


def fill_schema(schema: str, target_bytes: int) -> None:
    """Insert patients with appointments, treatments and invoices (PDF bytes) in batches until the schema's
    tables reach target_bytes; each batch is one INSERT ... SELECT over generate_series."""
    from psycopg import sql

    from backups.postgres import pgtools

    per_patient = 4500.0  # first guess of bytes per patient (with its children); corrected after each batch
    start = schema_relation_bytes(schema)
    patients = 0
    with pgtools.connect(autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute(HELPERS_SQL)
        size = start
        while size < target_bytes:
            n = int((target_bytes - size) / per_patient * 1.01) + 1
            n = max(500, min(n, 20000))
            conn.execute(FILL_SQL.replace("{s}", pgtools.quote_ident(schema)).replace("{n}", str(n)))
            patients += n
            size = schema_relation_bytes(schema)
            per_patient = max(1000.0, (size - start) / patients)
            print(f"    {schema}: {size / MB:.1f} of {target_bytes / MB:.0f} MB", flush=True)
        for table in CLINIC_TABLES:
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))


def ensure_tenant(spec: TenantSpec) -> TenantData:
    """Reuse the tenant's schema when a complete build of the right size is there; otherwise recreate it
    (tenant row through the ORM, which creates and migrates the schema) and fill it with SQL."""
    from psycopg import sql

    from backups.postgres import pgtools
    from tenants.models import Clinica

    tenant = Clinica.objects.filter(schema_name=spec.schema).first()
    size = schema_relation_bytes(spec.schema)
    if (tenant is not None and schema_marker(spec.schema) == marker_text(spec)
            and spec.target_bytes <= size <= spec.target_bytes * 1.5):
        return TenantData(spec, size, reused=True, build_seconds=0.0)

    started = time.perf_counter()
    if tenant is not None:
        tenant.delete()  # auto_drop_schema is off: the schema is dropped below
    with pgtools.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(spec.schema)))
    Clinica(schema_name=spec.schema, nombre=spec.nombre).save(verbosity=0)
    fill_schema(spec.schema, spec.target_bytes)
    with pgtools.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("COMMENT ON SCHEMA {} IS {}").format(sql.Identifier(spec.schema),
                                                                  sql.Literal(marker_text(spec))))
    return TenantData(spec, schema_relation_bytes(spec.schema), reused=False,
                      build_seconds=time.perf_counter() - started)


def row_counts(schema: str) -> dict[str, int]:
    """Rows of the generated tables."""
    from psycopg import sql

    from backups.postgres import pgtools

    with pgtools.connect() as conn:
        return {t: conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema),
                                                                             sql.Identifier(t))).fetchone()[0]
                for t in CLINIC_TABLES}


# --------------------------------------------------------------------------- measurements


def cpu_busy(interval: float = 1.0) -> float:
    """Share of all CPUs busy (not idle or iowait) over `interval` seconds, from /proc/stat."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:9]]
        return sum(fields), fields[3] + fields[4]

    total0, idle0 = sample()
    time.sleep(interval)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def wait_total() -> float:
    """Seconds spent waiting for quiet and re-running disturbed runs so far."""
    return QUIET_BUDGET_TOTAL - BUDGET["quiet"] + RETRY_BUDGET_TOTAL - BUDGET["retry"]


def wait_for_quiet() -> float:
    """Wait (up to QUIET_MAX_WAIT, within the bench's QUIET_BUDGET) until the machine is quiet; returns the
    busy share measured last, which the report shows beside each run."""
    started = time.perf_counter()
    busy = cpu_busy(0.5)
    while busy > QUIET_BUSY and time.perf_counter() - started < min(QUIET_MAX_WAIT, BUDGET["quiet"]):
        busy = cpu_busy(1.0)
    BUDGET["quiet"] = max(0.0, BUDGET["quiet"] - (time.perf_counter() - started))
    return busy


def _busy_seconds() -> float:
    """CPU seconds all CPUs spent busy since boot (user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in stat.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class OthersCpu:
    """CPU used during a run by processes other than the run's: all busy CPU time minus this process, its
    reaped children (bash, pg_dump, zstd, the Python children and theirs) and the bench database's
    PostgreSQL backends (found among the postmaster's children by their process title, polled)."""

    def __init__(self, postmaster_pid: int | None, database: str, interval: float = 0.02) -> None:
        self.postmaster_pid, self.title = postmaster_pid, f" {database} "
        self.interval = interval
        self.ours: dict[int, bool] = {}
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.stopped = threading.Event()

    def _scan(self, at_start: bool = False) -> None:
        try:
            with open(f"/proc/{self.postmaster_pid}/task/{self.postmaster_pid}/children") as children:
                pids = [int(p) for p in children.read().split()]
        except (OSError, TypeError):
            return
        for pid in pids:
            if pid not in self.ours:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                        self.ours[pid] = self.title in cmdline.read().decode(errors="replace")
                except OSError:
                    self.ours[pid] = False
            if self.ours[pid] and (cpu := _proc_cpu_seconds(pid)) is not None:
                self.first.setdefault(pid, cpu if at_start else 0.0)
                self.last[pid] = cpu

    def _poll(self) -> None:
        while not self.stopped.wait(self.interval):
            self._scan()

    def __enter__(self) -> OthersCpu:
        self._scan(at_start=True)
        self.self0 = resource.getrusage(resource.RUSAGE_SELF)
        self.children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.busy0, self.wall0 = _busy_seconds(), time.perf_counter()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join()
        self._scan()
        busy, wall = _busy_seconds() - self.busy0, time.perf_counter() - self.wall0
        self1, children1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        ours = sum(getattr(b, f) - getattr(a, f) for a, b in ((self.self0, self1), (self.children0, children1))
                   for f in ("ru_utime", "ru_stime"))
        ours += sum(self.last[pid] - self.first[pid] for pid in self.last)
        self.cores = max(0.0, busy - ours) / max(wall, 1e-9)


def postmaster_pid() -> int | None:
    """The local PostgreSQL server's main process (parent of our backend), None when not on this host."""
    from backups.postgres import pgtools

    with pgtools.connect() as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    try:
        with open(f"/proc/{backend}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


POSTMASTER: list[int | None] = []  # found once by measured_run


def measured_run(label: str, action: Callable[..., Run], *args: Any) -> Run:
    """Wait for quiet, run `action`, and make it again (up to MAX_ATTEMPTS, within the retry budget) when
    other processes took more than DISTURBED_CORES during it; returns the last attempt."""
    if not POSTMASTER:
        POSTMASTER.append(postmaster_pid())
    for attempt in range(1, MAX_ATTEMPTS + 1):
        busy = wait_for_quiet()
        with OthersCpu(POSTMASTER[0], BENCH_DB) as others:
            run = action(*args)
        run.busy_before, run.others_cores, run.attempts = busy, others.cores, attempt
        disturbed = others.cores > DISTURBED_CORES
        print(f"  {label:<28} {run.seconds:7.2f} s   busy before {busy:4.0%}, others during {others.cores:.2f} "
              f"cores{' - disturbed' if disturbed else ''}", flush=True)
        if not disturbed or attempt == MAX_ATTEMPTS or BUDGET["retry"] <= 0:
            return run
        BUDGET["retry"] -= run.seconds
    return run



def pg_dump_argv(schema: str) -> list[str]:
    """The pg_dump command line the pipeline runs (same binary and flags), without a snapshot."""
    from backups.postgres import pgtools
    from backups.postgres.dumpers import pg_dump_command

    return pg_dump_command(pgtools.binaries(), schema, "sql", None)


def rss_wrapper(rss_file: Path) -> list[str]:
    """A prefix that runs a command and writes its peak RSS (KiB) to rss_file: /usr/bin/time when present,
    otherwise a small Python wrapper reading getrusage(RUSAGE_CHILDREN)."""
    if Path("/usr/bin/time").is_file():
        return ["/usr/bin/time", "-f", "%M", "-o", str(rss_file)]
    code = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
            "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(rc)")
    return [PYTHON, "-c", code, str(rss_file)]


def dump_size(schema: str) -> int:
    """Bytes of pg_dump's plain output (also warms the caches before the timed runs)."""
    from backups.postgres import pgtools

    script = f"set -o pipefail; {shlex.join(pg_dump_argv(schema))} | wc -c"
    out = subprocess.run(["bash", "-c", script], env=pgtools.libpq_env(), check=True, capture_output=True, text=True)
    return int(out.stdout.strip())


def run_tool(schema: str, index: int) -> Run:
    """(a) `pg_dump | zstd -3 -T1 > file` through bash: wall time, pg_dump's peak RSS, output size."""
    from backups.postgres import pgtools

    TOOL_DIR.mkdir(parents=True, exist_ok=True)
    out, rss_file = TOOL_DIR / f"{schema}-{index}.sql.zst", TOOL_DIR / f"{schema}-{index}.rss"
    script = (f"set -o pipefail; {shlex.join(rss_wrapper(rss_file) + pg_dump_argv(schema))} "
              f"| zstd -3 -T1 -q > {shlex.quote(str(out))}")
    started = time.perf_counter()
    proc = subprocess.run(["bash", "-c", script], env=pgtools.libpq_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"pg_dump | zstd failed ({proc.returncode}): {proc.stderr.strip()}")
    run = Run("tool", seconds, out.stat().st_size, pg_dump_rss_kib=int(rss_file.read_text().split()[-1]))
    out.unlink()
    rss_file.unlink()
    return run


RECORD_IDS: list[int] = []  # backup records this run created, deleted at the end


def remove_stored(key: str) -> None:
    """Delete a backup object and its manifest from the bench storage folder."""
    for path in (STORE_DIR / key, STORE_DIR / (key + ".manifest.json")):
        path.unlink(missing_ok=True)


def run_pipeline(schema: str, overrides: dict | None = None) -> Run:
    """(b) backup_record_create + backup_run in a fresh Python process (bench/pipeline_child.py)."""
    if overrides is None and PIPELINE_VARIANT:
        overrides = {"variant": PIPELINE_VARIANT}
    argv = [PYTHON, str(ROOT / "bench" / "pipeline_child.py"), schema]
    if overrides:
        argv.append(json.dumps(overrides))
    proc = subprocess.run(argv, env=child_env(), cwd=ROOT, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"pipeline run failed ({proc.returncode}): {proc.stdout.strip()} {proc.stderr.strip()}")
    report = json.loads(lines[-1])
    RECORD_IDS.append(report["record_id"])
    remove_stored(report["storage_key"])
    return Run("pipeline", report["seconds"], report["size"], python_rss_kib=report["python_rss_kib"],
               pg_dump_rss_kib=report["pg_dump_rss_kib"], plain_size=report["plain_size"],
               cpu_seconds=report["cpu_seconds"], commit_seconds=report["commit_seconds"],
               before_pg_dump_seconds=report["before_pg_dump_seconds"], dump_seconds=report["dump_seconds"],
               after_dump_seconds=report["after_dump_seconds"],
               chunks=report["chunks"], mean_chunk_kib=report["mean_chunk_kib"])


def run_command(schema: str) -> Run:
    """(c) `python manage.py backup_tenant schema`: wall time including Django's start-up."""
    started = time.perf_counter()
    proc = subprocess.run([PYTHON, "manage.py", "backup_tenant", schema], env=child_env(), cwd=ROOT,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"backup_tenant failed ({proc.returncode}): {proc.stdout.strip()} {proc.stderr.strip()}")
    fields = dict(line.split(None, 1) for line in proc.stdout.splitlines() if line.strip())
    RECORD_IDS.append(int(fields["record"]))
    remove_stored(fields["file"].strip())
    return Run("command", seconds, int(fields["size"].split()[0]))


RUNNERS = {"tool": run_tool, "pipeline": run_pipeline, "command": run_command}


def measure(schema: str, repeats: int) -> dict[str, list[Run]]:
    """Each kind `repeats` times; the order rotates every repetition so none always runs first (cache)."""
    kinds = list(RUNNERS)
    runs: dict[str, list[Run]] = {kind: [] for kind in kinds}
    for index in range(repeats):
        order = kinds[index % len(kinds):] + kinds[:index % len(kinds)]
        for kind in order:
            args = (schema, index) if kind == "tool" else (schema,)
            runs[kind].append(measured_run(f"{schema} {index + 1}/{repeats} {kind}", RUNNERS[kind], *args))
    return runs


# --------------------------------------------------------------------------- report


def median(values: list[float]) -> float:
    """Median (0 for no values)."""
    return statistics.median(values) if values else 0.0


def mib(kib: float) -> str:
    """KiB as MiB text."""
    return f"{kib / 1024:.1f} MiB"


def disturbed(run: Run) -> bool:
    """Whether other processes took more than DISTURBED_CORES during the run."""
    return run.others_cores > DISTURBED_CORES


def timing_median(runs: list[Run]) -> tuple[float, int]:
    """Median wall time over the undisturbed runs (over all when every run was disturbed), and how many
    undisturbed runs there were."""
    quiet = [r.seconds for r in runs if not disturbed(r)]
    return median(quiet or [r.seconds for r in runs]), len(quiet)


def print_table(data: TenantData, runs: dict[str, list[Run]]) -> dict[str, float]:
    """The per-tenant table; returns what the targets are checked against. Timing medians leave out the
    runs marked * (disturbed by other processes) unless every run of that kind was."""
    (tool, tool_n), (pipe, pipe_n), (cmd, _) = (timing_median(runs[k]) for k in ("tool", "pipeline", "command"))
    py_rss = median([r.python_rss_kib for r in runs["pipeline"]])
    tool_size = median([r.size for r in runs["tool"]])
    our_size = median([r.size for r in runs["pipeline"]])
    spec = data.spec
    print(f"\n{spec.schema}: {data.relation_bytes / MB:.1f} MB in relations (target {spec.target_bytes / MB:.0f} MB), "
          f"pg_dump output {data.dump_bytes / MB:.1f} MB, "
          + ("reused from an earlier run" if data.reused else f"built in {data.build_seconds:.1f} s"))
    print("  rows: " + ", ".join(f"{t.removeprefix('clinic_')} {n:,}" for t, n in data.rows.items()))

    def row(label: str, values: list[str], med: str) -> None:
        print(f"  {label:<38}" + "".join(f"{v:>12}" for v in values) + f"{med:>12}")

    def seconds(kind: str) -> list[str]:
        return [f"{r.seconds:.2f}" + ("*" if disturbed(r) else "") for r in runs[kind]]

    row("", [f"run {i + 1}" for i in range(len(runs["tool"]))], "median")
    row("(a) pg_dump | zstd -3 -T1 (s)", seconds("tool"), f"{tool:.2f}")
    row("(b) backup_run pipeline (s)", seconds("pipeline"), f"{pipe:.2f}")
    for label, attr in (("    before pg_dump starts (s)", "before_pg_dump_seconds"),
                        ("    pg_dump start to end of dump (s)", "dump_seconds"),
                        ("    after the dump (s)", "after_dump_seconds"),
                        ("      of which commit/fsync (s)", "commit_seconds"),
                        ("    Python CPU (s)", "cpu_seconds")):
        values = [getattr(r, attr) for r in runs["pipeline"]]
        row(label, [f"{v:.2f}" for v in values], f"{median(values):.2f}")
    row("(c) manage.py backup_tenant (s)", seconds("command"), f"{cmd:.2f}")
    pairs = list(zip(runs["tool"], runs["pipeline"], runs["command"], strict=True))
    row("pipeline / tool", [f"{p.seconds / t.seconds:.3f}" for t, p, _ in pairs], f"{pipe / tool:.3f}")
    row("command / tool", [f"{c.seconds / t.seconds:.3f}" for t, _, c in pairs], f"{cmd / tool:.3f}")
    for kind in RUNNERS:
        row(f"others' CPU during {kind} (cores)",
            [f"{r.others_cores:.2f}" + ("*" if disturbed(r) else "") for r in runs[kind]],
            f"{median([r.others_cores for r in runs[kind]]):.2f}")
    row("Python peak RSS (pipeline)", [mib(r.python_rss_kib) for r in runs["pipeline"]], mib(py_rss))
    row("pg_dump peak RSS (pipeline)", [mib(r.pg_dump_rss_kib) for r in runs["pipeline"]],
        mib(median([r.pg_dump_rss_kib for r in runs["pipeline"]])))
    row("pg_dump peak RSS (tool)", [mib(r.pg_dump_rss_kib) for r in runs["tool"]],
        mib(median([r.pg_dump_rss_kib for r in runs["tool"]])))
    row("output MB, zstd -3 (tool)", [f"{r.size / MB:.2f}" for r in runs["tool"]], f"{tool_size / MB:.2f}")
    row("output MB, ours (pipeline)", [f"{r.size / MB:.2f}" for r in runs["pipeline"]], f"{our_size / MB:.2f}")
    row("output MB, ours (command)", [f"{r.size / MB:.2f}" for r in runs["command"]],
        f"{median([r.size for r in runs['command']]) / MB:.2f}")
    plain = median([r.plain_size for r in runs["pipeline"]])
    print(f"  * disturbed: other processes took more than {DISTURBED_CORES} cores; timing medians leave those "
          f"runs out ({tool_n} tool, {pipe_n} pipeline runs left)")
    print(f"  plain dump {plain / MB:.1f} MB -> ours {our_size / MB:.1f} MB "
          f"(ratio {plain / our_size:.2f}), zstd CLI {tool_size / MB:.1f} MB; "
          f"throughput tool {plain / MB / tool:.0f} MB/s, pipeline {plain / MB / pipe:.0f} MB/s")
    return {"ratio": pipe / tool, "ratio_runs": min(tool_n, pipe_n), "py_rss_kib": py_rss,
            "size_diff": abs(our_size - tool_size) / tool_size, "command_ratio": cmd / tool}


def print_verdicts(results: dict[str, dict[str, float]]) -> None:
    """One PASS/FAIL line per target (INCONCLUSIVE for a time ratio when every run of a kind was disturbed)."""
    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    print()
    for schema, r in results.items():
        word = verdict(r["ratio"] <= MAX_PIPELINE_RATIO) if r["ratio_runs"] else "INCONCLUSIVE"
        print(f"{word}  {schema}: pipeline/tool {r['ratio']:.3f} (target <= {MAX_PIPELINE_RATIO})")
    large_schema = TENANTS[-1].schema
    command = results[large_schema]["command_ratio"]
    print(f"{verdict(command <= MAX_COMMAND_RATIO)}  {large_schema}: manage.py backup_tenant/tool {command:.3f} "
          f"(start-up included, target <= {MAX_COMMAND_RATIO})")
    for schema, r in results.items():
        print(f"{verdict(r['py_rss_kib'] / 1024 < MAX_PYTHON_RSS_MB)}  {schema}: Python peak RSS "
              f"{mib(r['py_rss_kib'])} (target < {MAX_PYTHON_RSS_MB} MiB)")
    small, large = (results[t.schema]["py_rss_kib"] for t in TENANTS)
    growth = (large - small) / small
    print(f"{verdict(growth <= MAX_RSS_GROWTH)}  Python peak RSS independent of size: large/small "
          f"{large / small:.3f} ({mib(small)} vs {mib(large)}, target within {MAX_RSS_GROWTH:.0%})")
    for schema, r in results.items():
        print(f"{verdict(r['size_diff'] <= MAX_SIZE_DIFF)}  {schema}: output size vs zstd -3 differs by "
              f"{r['size_diff']:.2%} (target within {MAX_SIZE_DIFF:.0%})")


def cleanup() -> None:
    """Remove this run's backup files and records, and records an interrupted run left over an hour ago
    (the schemas stay)."""
    shutil.rmtree(OUT_DIR, ignore_errors=True)
    try:
        OUT_ROOT.rmdir()  # only when no other run's folder is left in it
    except OSError:
        pass
    from datetime import timedelta

    from django.db.models import Q
    from django.utils import timezone

    from backups.models import BackupEvent, BackupRecord

    stale = Q(schema_name__in=[t.schema for t in TENANTS], created_at__lt=timezone.now() - timedelta(hours=1))
    records = BackupRecord.objects.filter(Q(pk__in=RECORD_IDS) | stale)
    BackupEvent.objects.filter(record__in=records).delete()
    records.delete()


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """Hold an advisory lock on the bench database for the run, waiting for another bench run to end (two
    runs at once would measure each other)."""
    from backups.postgres import pgtools

    with pgtools.connect(autocommit=True) as conn:
        if not conn.execute("SELECT pg_try_advisory_lock(%s, %s)", LOCK_KEY).fetchone()[0]:
            print("  another bench_pipeline or tune_pipeline run holds the bench database: waiting for it", flush=True)
            conn.execute("SELECT pg_advisory_lock(%s, %s)", LOCK_KEY)
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", LOCK_KEY)


def run() -> None:
    """Run the benchmark in a child process, so its Django set-up (on the bench database) stays out of
    the runner's interpreter and of the other benchmarks."""
    proc = subprocess.run([PYTHON, str(Path(__file__).resolve())], cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"bench_pipeline exited with status {proc.returncode}")


def main() -> None:
    """Build or reuse the bench tenants, measure tool / pipeline / command on each, print the report."""
    started = time.perf_counter()
    prepare_database()
    from backups.postgres import pgtools

    bins = pgtools.binaries()
    print(f"database {BENCH_DB}, {bins.pg_dump} ({bins.version}), {os.cpu_count()} CPUs, {REPEATS} repetitions, "
          f"pipe-max-size {Path('/proc/sys/fs/pipe-max-size').read_text().strip()}", flush=True)
    if PIPELINE_VARIANT:
        from bench.variants import VARIANTS

        print(f"(b) runs with variant {PIPELINE_VARIANT}: {VARIANTS[PIPELINE_VARIANT].description}", flush=True)
    results: dict[str, dict[str, float]] = {}
    try:
        with exclusive():
            datas = []
            for spec in TENANTS:
                data = ensure_tenant(spec)
                data.rows = row_counts(spec.schema)
                print(f"  {spec.schema}: {data.relation_bytes / MB:.1f} MB "
                      + ("(reused)" if data.reused else f"(built in {data.build_seconds:.1f} s)"), flush=True)
                datas.append(data)
            for data in datas:
                data.dump_bytes = dump_size(data.spec.schema)  # warm-up run, untimed
                runs = measure(data.spec.schema, REPEATS)
                results[data.spec.schema] = print_table(data, runs)
            print_verdicts(results)
    finally:
        cleanup()
    print(f"\nbench_pipeline took {time.perf_counter() - started:.0f} s (of which {wait_total():.0f} s waiting for "
          f"a quiet machine); backup files removed, database {BENCH_DB} kept for the next run.")


if __name__ == "__main__":
    main()
