"""The chaos suite's world: a private PostgreSQL cluster, a private diskless Redis, a private tmpfs for local
storage and moto for S3, all started here; real `celery worker` and `celery beat` processes on them, with
short timings so every bound is seconds. Scenarios kill and restart things, then check the invariants from
the database and the storage (never from logs).

Nothing here touches the shared PostgreSQL or Redis, nor Django's test database: the test process reads the
private database with psycopg only.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import boto3
import psycopg
import pytest
import redis

from project.processes import start_beat, start_worker, stop_process
from tests.chaos.cluster import PgCluster, start_cluster
from tests.servers.moto_s3 import MotoS3Server
from tests.servers.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
SMALL_TENANTS = 6
BIG_MB = 96
BUCKET = "chaos-backups"
# every bound of the reliability section, shrunk to seconds
TIMINGS = {
    "BACKUPS_TICK_SECONDS": "1", "BACKUPS_REAPER_SECONDS": "2", "BACKUPS_ORPHAN_GRACE_SECONDS": "3",
    "BACKUPS_LOST_MESSAGE_SECONDS": "3", "BACKUPS_TASK_RETRY_DELAY": "1", "BACKUPS_TASK_RETRY_MAX_DELAY": "3",
    "BACKUPS_TRANSIENT_RETRY_WINDOW_SECONDS": "240", "BACKUPS_DUMP_SOFT_TIME_LIMIT": "25",
    "BACKUPS_DUMP_TIME_LIMIT": "30", "BACKUPS_RUNNING_GRACE_SECONDS": "2", "CELERY_VISIBILITY_TIMEOUT": "60",
    "BACKUPS_SPREAD_SECONDS": "0", "BACKUPS_TENANT_LOCK_WAIT_SECONDS": "3", "BACKUPS_DUMP_SLOT_WAIT_SECONDS": "3",
    "BACKUPS_PROGRESS_EVERY_BYTES": str(1 << 20), "BACKUPS_OVERDUE_CHECK_SECONDS": "0", "BACKUPS_DRILL_SECONDS": "0",
    "BACKUPS_RECONCILE_SECONDS": "0", "BACKUPS_COMPRESSION": "gzip", "BACKUPS_S3_PART_SIZE": str(5 << 20),
}
PARTIAL_BOUND = 30 + 2  # hard time limit + running grace: the age past which the reaper removes dead uploads


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if "tests/chaos/" in str(item.fspath):
            item.add_marker(pytest.mark.chaos)


def wait_until(predicate: Callable[[], object], what: str, timeout: float = 60.0, every: float = 0.2):
    """Poll until `predicate()` is truthy; its value, or AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@dataclass
class World:
    """The private services, the environment every process of the suite gets, and what runs now."""

    pg: PgCluster
    broker: RedisServer
    s3: MotoS3Server
    local_root: Path
    logs: Path
    env: dict[str, str]
    procs: list[subprocess.Popen] = field(default_factory=list)

    def note(self, what: str, seconds: float) -> None:
        """Record a measured recovery time (var/chaos/bounds.tsv; the README's reliability figures)."""
        with open(self.logs / "bounds.tsv", "a") as out:
            out.write(f"{what}\t{seconds:.1f}\n")

    # --- processes ------------------------------------------------------------------------------------
    def worker(self, name: str, *, queues: tuple[str, ...] | None = None, s3: bool = False,
               concurrency: int = 2, env: dict[str, str] | None = None) -> subprocess.Popen:
        """A worker on the world's services (S3 as the store with `s3`), `env` over its environment."""
        from tasks.queues import ALL

        log = self.logs / f"{name}.log"
        log.unlink(missing_ok=True)  # "ready." must be this process's
        proc = start_worker(name=name, concurrency=concurrency, log_file=log, queues=queues or ALL,
                            extra_env={**(self.s3_env() if s3 else self.env), **(env or {})})
        self.procs.append(proc)
        wait_until(lambda: proc.poll() is not None or " ready." in log.read_text(errors="replace"),
                   f"worker {name} to start", timeout=60)
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        return proc

    def beat(self, name: str, *, s3: bool = False) -> subprocess.Popen:
        (self.logs / f"{name}.log").unlink(missing_ok=True)
        proc = start_beat(log_file=self.logs / f"{name}.log", extra_env=self.s3_env() if s3 else self.env)
        self.procs.append(proc)
        return proc

    def kill9(self, proc: subprocess.Popen) -> None:
        """SIGKILL the whole process group (the worker and its pool children), as the OOM killer or a host does."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs:
            stop_process(proc, timeout=20)
        self.procs.clear()

    def s3_env(self) -> dict[str, str]:
        """The same settings with S3 as the store new backups go to."""
        return {**self.env, "BACKUPS_STORAGE": "s3"}

    def s3_settings(self) -> dict[str, str]:
        """Every process can reach the S3 store (records made there are deleted there by any of them)."""
        return {"AWS_STORAGE_BUCKET_NAME": BUCKET,
                "AWS_S3_ENDPOINT_URL": self.s3.endpoint_url, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_S3_ADDRESSING_STYLE": "path", "AWS_S3_SSE": "none",
                "AWS_S3_MAX_ATTEMPTS": "2", "AWS_S3_CONNECT_TIMEOUT": "2", "AWS_S3_READ_TIMEOUT": "10"}

    # --- the database ---------------------------------------------------------------------------------
    def sql(self, query: str, params: tuple | list = ()) -> list[tuple]:
        for attempt in range(30):  # the scenario may have just restarted the server
            try:
                with psycopg.connect(self.pg.url("chaos"), autocommit=True) as conn:
                    cur = conn.execute(query, params)
                    return cur.fetchall() if cur.description else []
            except psycopg.OperationalError:
                if attempt == 29:
                    raise
                time.sleep(0.5)
        return []

    def last_record_id(self) -> int:
        return self.sql("SELECT coalesce(max(id), 0) FROM backups_backuprecord")[0][0]

    def make_due(self, schemas: list[str], at: datetime) -> datetime:
        """Give the tenants a due slot at `at` (whole seconds, as the scheduler makes them)."""
        at = at.replace(microsecond=0)
        self.sql("UPDATE tenants_clinica SET backup_schedule = 'daily', backup_time = '03:00', next_backup_at = %s "
                 "WHERE schema_name = ANY(%s)", (at, schemas))
        return at

    def wait_all_done(self, started: datetime, count: int, timeout: float = 180.0) -> None:
        """`count` records made by the scheduler since `started` (some maybe deleted since by retention), and
        nothing queued or running."""
        def done():
            made = self.sql("SELECT count(*) FROM backups_backupevent WHERE action = 'create' AND created_at >= %s"
                            " AND actor->>'scheduler' = 'true'", (started,))[0][0]
            busy = self.sql("SELECT count(*) FROM backups_backuprecord WHERE status IN ('queued', 'running')")[0][0]
            return made >= count and busy == 0
        wait_until(done, f"{count} scheduled backups to finish", timeout=timeout, every=0.5)

    def records(self, since: int) -> list[dict]:
        cols = ("id", "schema_name", "slot", "status", "stage", "storage_backend", "storage_key", "size", "sha256",
                "error", "attempts")
        rows = self.sql(f"SELECT {', '.join(cols)} FROM backups_backuprecord WHERE id > %s ORDER BY id", (since,))
        return [dict(zip(cols, row, strict=True)) for row in rows]

    def wait_finished(self, since: int, count: int, timeout: float = 120.0) -> list[dict]:
        """Every record made since `since` (at least `count` of them) succeeded or failed."""
        def done():
            rows = self.records(since)
            return rows if len(rows) >= count and all(r["status"] in ("succeeded", "failed") for r in rows) \
                else None
        try:
            return wait_until(done, f"{count} records to finish", timeout=timeout, every=0.5)
        except AssertionError:
            raise AssertionError(f"records still unfinished: {self.records(since)}") from None

    # --- the storage ----------------------------------------------------------------------------------
    def local_objects(self) -> dict[str, bytes]:
        """Every file under the local root by key (partial files included, so they can be counted)."""
        out = {}
        for path in self.local_root.rglob("*"):
            if path.is_file():
                out[str(path.relative_to(self.local_root))] = path.read_bytes()
        return out

    def s3_client(self):
        return boto3.client("s3", endpoint_url=self.s3.endpoint_url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def s3_objects(self) -> dict[str, bytes]:
        client = self.s3_client()
        out = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for obj in page.get("Contents", []):
                key = obj["Key"].removeprefix("backups/")
                out[key] = client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
        return out

    def s3_open_uploads(self) -> int:
        return len(self.s3_client().list_multipart_uploads(Bucket=BUCKET).get("Uploads", []))

    def wait_quiet(self, timeout: float = 60.0) -> None:
        """No record queued, running or half deleted. Chain steps still queued (a killed worker's messages come
        back after the visibility timeout) may run later: they find their records finished, and a deletion
        they make marks its record before it touches the storage, which check_invariants relies on."""
        busy = ("SELECT id, status, stage FROM backups_backuprecord "
                "WHERE stage = 'deleting' OR status IN ('queued', 'running')")
        try:
            wait_until(lambda: not self.sql(busy), "the records to settle", timeout=timeout, every=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: busy {self.sql(busy)}") from None

    # --- the invariants -------------------------------------------------------------------------------
    def check_invariants(self, *, since: int, slots: dict[str, list[datetime]], backend: str = "local") -> None:
        """What must hold after any fault, read from the database and the storage.

        - every due slot has exactly one record, and it succeeded, and its object matches its size and SHA-256
          (or retention deleted it after a newer one succeeded, and its object is gone with it);
        - no record is queued or running;
        - no orphan object (without a record), no manifest without its object, no partial file or open upload
          (a tenant file's blob has no record of its own: manifests list it);
        - the newest succeeded backup of each tenant is there (retention never deletes it).
        """
        from backups.catalog.file_blobs import is_blob_key

        self.wait_quiet()
        objects = self.local_objects() if backend == "local" else self.s3_objects()  # before the rows: a deletion
        # marks its record before it deletes the object, so a record still succeeded below had its object here
        rows = self.sql("SELECT r.id, r.schema_name, r.slot, r.status, r.storage_backend, r.storage_key, r.size, "
                        "r.sha256, r.error FROM backups_backuprecord r WHERE r.stage <> 'deleting'")
        assert not [r for r in rows if r[3] in ("queued", "running")], \
            f"unfinished records: {[r for r in rows if r[3] in ('queued', 'running')]}"
        by_slot: dict[tuple[str, datetime], list[tuple]] = {}
        for row in rows:
            if row[2] is not None:
                by_slot.setdefault((row[1], row[2]), []).append(row)
        retained = {r[0] for r in self.sql(
            "SELECT details->>'file_name' FROM backups_backupevent WHERE action = 'retention'")}
        for schema, wanted in slots.items():
            for slot in wanted:
                found = by_slot.get((schema, slot), [])
                stamp = slot.strftime("%Y-%m-%d-%H%M%S")
                if not found:
                    assert any(name and schema in name and stamp in name for name in retained), \
                        f"slot {slot} of {schema} has no record and retention did not delete one"
                    continue
                assert len(found) == 1, f"slot {slot} of {schema} has {len(found)} records"
                assert found[0][3] == "succeeded", f"slot {slot} of {schema}: {found[0][3]} {found[0][8]}"
        ours = {r[5]: r for r in rows if r[4] == backend}
        now = self.local_objects() if backend == "local" else self.s3_objects()
        for key in objects:
            name = key.rsplit("/", 1)[-1]
            assert not name.startswith(".partial-"), f"partial file left: {key}"
            if key.endswith(".manifest.json"):
                assert key.removesuffix(".manifest.json") in objects or key not in now, \
                    f"manifest without its object: {key}"
                continue
            if is_blob_key(key):  # a tenant file's content: listed by manifests, swept by retention, no record
                continue
            assert key in ours or key not in now, f"orphan object (no record): {key}"
        for key, row in ours.items():
            if row[3] == "succeeded":
                assert key in objects, f"succeeded record {row[0]} has no object at {key}"
                data = objects[key]
                assert len(data) == row[6] and hashlib.sha256(data).hexdigest() == row[7], \
                    f"object of record {row[0]} does not match its size and SHA-256"
        if backend == "s3":
            assert self.s3_open_uploads() == 0, "an incomplete multipart upload is left"
        for (schema,) in self.sql("SELECT DISTINCT schema_name FROM backups_backuprecord WHERE status='succeeded'"):
            newest = self.sql("SELECT storage_backend, storage_key FROM backups_backuprecord WHERE schema_name = %s "
                              "AND status = 'succeeded' ORDER BY created_at DESC, id DESC LIMIT 1", (schema,))
            if newest and newest[0][0] == backend:
                assert newest[0][1] in objects, f"the newest backup of {schema} lost its object"

    def wait_clean(self, backend: str = "local", timeout: float = PARTIAL_BOUND + 30) -> None:
        """Dead writers' partial files and uploads are gone within the reaper's bound."""
        if backend == "local":
            wait_until(lambda: not any(".partial-" in k for k in self.local_objects()), "partial files to go",
                       timeout=timeout, every=1)
        else:
            wait_until(lambda: self.s3_open_uploads() == 0, "open uploads to be aborted", timeout=timeout, every=1)


@pytest.fixture(scope="session")
def world() -> Iterator[World]:
    """Start every private service and seed the database (about 40 s); stop them all by pid at the end."""
    base = Path(tempfile.mkdtemp(prefix="tb-chaos-"))
    local_root, logs = base / "backups", Path(os.environ.get("CHAOS_LOG_DIR") or ROOT / "var" / "chaos")
    local_root.mkdir()
    logs.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2g,mode=0700", "tmpfs", str(local_root)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.fail(f"The chaos suite needs a tmpfs for its storage (run as root): {mounted.stderr.strip()}")
    pg = broker = s3 = None
    try:
        pg = start_cluster()
        pg.connect().execute("CREATE DATABASE chaos")
        broker = RedisServer.start()
        s3 = MotoS3Server.start()
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("BACKUPS_", "CELERY_", "AWS_"))},
               **TIMINGS, "DATABASE_URL": pg.url("chaos"), "REDIS_URL": broker.url,
               "BACKUPS_LOCAL_ROOT": str(local_root), "DJANGO_DEBUG": "1", "BACKUPS_STORAGE": "local",
               "BACKUPS_PG_BIN_DIR": os.environ.get("BACKUPS_PG_BIN_DIR", "")}
        seeded = subprocess.run([sys.executable, "-m", "tests.chaos.seed", str(SMALL_TENANTS), str(BIG_MB)],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert seeded.returncode == 0, seeded.stdout[-2000:] + seeded.stderr[-4000:]
        w = World(pg=pg, broker=broker, s3=s3, local_root=local_root, logs=logs, env=env)
        w.env.update(w.s3_settings())
        w.s3_client().create_bucket(Bucket=BUCKET)
        yield w
        w.stop_all()
    finally:
        for server in (s3, broker, pg):
            if server is not None:
                server.stop()
        subprocess.run(["umount", str(local_root)], capture_output=True)


@pytest.fixture
def chaos(world: World) -> Iterator[World]:
    """One scenario: an empty broker, no process left from the last one, no tenant due."""
    world.stop_all()
    broker = redis.Redis.from_url(world.broker.url)
    broker.config_set("maxmemory", 0)  # a scenario may have filled it
    broker.flushall()
    world.sql("UPDATE tenants_clinica SET backup_schedule = 'disabled', next_backup_at = NULL")
    yield world
    world.stop_all()


def small_schemas() -> list[str]:
    return [f"chaos_{n:02d}" for n in range(SMALL_TENANTS)]


def past(seconds: float = 60) -> datetime:
    """A due time `seconds` ago, in UTC."""
    from datetime import UTC

    return datetime.now(UTC) - timedelta(seconds=seconds)
