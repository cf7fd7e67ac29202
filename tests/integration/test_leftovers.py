"""What a killed process leaves behind never stops the next worker (issue 22, 2).

Each leftover is made by a real subprocess through the product's own code (open_backup's restore spool,
_spooled_dump's batch spool, _verify_script's scratch database) and then killed with SIGKILL: nothing of its own
clean-up runs. The clean-up (worker start-up, reaper) must remove it, and must never remove what a live process
still holds.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.conf import settings as django_settings

from backups.housekeeping.reaper import reap_stuck_backups
from backups.postgres import pgtools

pytestmark = pytest.mark.timeout(300)

READY_TIMEOUT = 120.0  # a child's set-up: django.setup(), a pg_dump of one demo tenant, a scratch database
GONE_TIMEOUT = 30.0  # the server noticing a killed client and ending its sessions (so its locks go)

CHILD_PRELUDE = """
import hashlib, io, os, sys, time
from pathlib import Path
from types import SimpleNamespace
import django
django.setup()
ready = Path(sys.argv[1])
def hold(what):
    tmp = ready.with_suffix(".tmp")
    tmp.write_text(str(what))
    tmp.rename(ready)
    time.sleep(600)
"""

RESTORE_SPOOL_CHILD = """
from backups.storage.reading import open_backup
data = os.urandom(1 << 20)
record = SimpleNamespace(sha256=hashlib.sha256(data).hexdigest(), size=len(data), storage_key="k",
                         compression="none", encryption="none")
class Storage:
    def open_read(self, key):
        return io.BytesIO(data)
with open_backup(Storage(), record) as backup:
    hold(os.readlink(f"/proc/self/fd/{backup.spool.fileno()}"))
"""

BATCH_SPOOL_CHILD = """
from backups.backup.batch.run import _spooled_dump
grow = int(sys.argv[2])
with _spooled_dump(["clinica_demo"], 0) as target:
    with open(target, "r+b") as f:
        os.posix_fallocate(f.fileno(), 0, grow)
    hold(target)
"""

DRILL_CHILD = """
from backups.restore import run as restore
def loaded(conn, record, backup):
    hold(conn.info.dbname)
restore._loaded = loaded
restore._verify_script("clinica_demo", SimpleNamespace(pk=987654, manifest={}), None, {})
"""


class Child:
    """A subprocess running the product's code until it holds its leftover; killed with SIGKILL by the test."""

    def __init__(self, body: str, workdir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.ready = workdir / f"ready-{os.urandom(4).hex()}"
        script = CHILD_PRELUDE + textwrap.dedent(body)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, str(self.ready), *args], cwd=django_settings.BASE_DIR,
            env={**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", **(env or {})},
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait_ready(self) -> str:
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.ready.exists():
            if self.proc.poll() is not None:
                pytest.fail(f"the child exited ({self.proc.returncode}): {self.proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail("the child did not get ready in time")
            time.sleep(0.05)
        return self.ready.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc.stderr.close()


@pytest.fixture
def spool(settings) -> Iterator[Path]:
    """A private BACKUPS_SPOOL_DIR on tmpfs (/dev/shm): its free space moves with this test's files only."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    root = Path(tempfile.mkdtemp(prefix="tb-leftovers-", dir=base))  # the children's "ready" files go here
    path = root / "spool"
    path.mkdir()
    settings.BACKUPS_SPOOL_DIR = str(path)
    yield path
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def children() -> Iterator[list[Child]]:
    made: list[Child] = []
    yield made
    for child in made:
        child.kill()


def _start(children: list[Child], body: str, spool: Path, *args: str) -> tuple[Child, str]:
    child = Child(body, spool.parent, *args, env={"BACKUPS_SPOOL_DIR": str(spool)})
    children.append(child)
    return child, child.wait_ready()


def _database_exists(name: str) -> bool:
    with pgtools.connect(autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def _reap_until(done):
    """Run the reaper until `done(result)`, for at most GONE_TIMEOUT (the server ends a killed client's session
    a moment after the kill); the last result."""
    deadline = time.monotonic() + GONE_TIMEOUT
    while True:
        result = reap_stuck_backups(broker_url=None)
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def test_a_killed_restores_spool_is_removed_and_a_live_ones_never(spool, children):
    live, live_path = _start(children, RESTORE_SPOOL_CHILD, spool)
    dead, dead_path = _start(children, RESTORE_SPOOL_CHILD, spool)
    legacy = spool / "tb-restore-abcd1234.spool"  # named before the rule: its maker cannot be told alive
    legacy.write_bytes(b"x")
    assert Path(live_path).parent == Path(dead_path).parent == spool
    dead.kill()

    result = reap_stuck_backups(broker_url=None)
    assert not Path(dead_path).exists()
    assert Path(live_path).exists() and legacy.exists()
    assert result.removed_spool_files == 1

    for _ in range(3):  # however often it runs, the live process's spool stays
        assert reap_stuck_backups(broker_url=None).removed_spool_files == 0
    assert Path(live_path).exists()
    live.kill()
    assert reap_stuck_backups(broker_url=None).removed_spool_files == 1
    assert sorted(p.name for p in spool.iterdir()) == [legacy.name]


def test_a_killed_batchs_spool_no_longer_stops_the_next_worker(spool, children, settings):
    """Two kill -9s of batch processes leave spools that would fail the start-up free-space check."""
    from backups.storage.spools import SPOOL_MARGIN
    from backups.tasks import check_configuration_on_start

    grow = 48 << 20
    paths = []
    for _ in range(2):
        child, path = _start(children, BATCH_SPOOL_CHILD, spool, str(grow))
        child.kill()
        paths.append(Path(path))
    assert all(p.exists() and p.stat().st_blocks * 512 >= grow for p in paths)
    # a limit that fits once the dead processes' 96 MB are free, and not while they are left: +-48 MB of slack
    settings.BACKUPS_BATCH_SIZE = max(2, int(getattr(settings, "BACKUPS_BATCH_SIZE", 2)))
    settings.BACKUPS_BATCH_MAX_SPOOL_BYTES = shutil.disk_usage(spool).free - SPOOL_MARGIN + grow

    check_configuration_on_start()  # the worker_init hook: SystemExit(2) when the spool has no room

    assert not any(p.exists() for p in paths)


def test_a_killed_drills_scratch_database_is_dropped_and_a_live_ones_never(spool, children):
    live, live_db = _start(children, DRILL_CHILD, spool)
    dead, dead_db = _start(children, DRILL_CHILD, spool)
    assert live_db != dead_db and _database_exists(live_db) and _database_exists(dead_db)
    legacy = f"tb_verify_987654_{os.urandom(3).hex()}"  # named before the rule: never dropped by it
    with pgtools.connect(autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{legacy}"')
    try:
        dead.kill()
        result = _reap_until(lambda r: dead_db in r.dropped_scratch_databases)
        assert dead_db in result.dropped_scratch_databases
        assert not _database_exists(dead_db)
        assert _database_exists(live_db) and _database_exists(legacy)
        assert live_db not in reap_stuck_backups(broker_url=None).dropped_scratch_databases
        assert _database_exists(live_db)  # and the live drill's session to it was not ended
        assert live.proc.poll() is None
    finally:
        with pgtools.connect(autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{legacy}" WITH (FORCE)')
    live.kill()
    result = _reap_until(lambda r: live_db in r.dropped_scratch_databases)
    assert live_db in result.dropped_scratch_databases and not _database_exists(live_db)


def test_a_spool_is_never_taken_in_the_instant_before_its_maker_locks_it(spool):
    """Makers and cleaners racing: every spool a maker holds is still there, and every dead one is gone."""
    from backups.storage.spools import RESTORE_SPOOL, spool_create, spool_files_remove

    stop = threading.Event()
    lost: list[str] = []

    def clean() -> None:
        while not stop.is_set():
            spool_files_remove(spool)

    cleaners = [threading.Thread(target=clean) for _ in range(2)]
    for thread in cleaners:
        thread.start()
    try:
        deadline = time.monotonic() + 10
        made = 0
        while made < 300 and time.monotonic() < deadline:
            fd, path = spool_create(spool, RESTORE_SPOOL)
            os.write(fd, b"data")
            if not os.path.exists(path) or os.stat(path).st_ino != os.fstat(fd).st_ino:
                lost.append(path)
            os.close(fd)  # dies holding it: the cleaners take it
            made += 1
    finally:
        stop.set()
        for thread in cleaners:
            thread.join(timeout=30)
    assert made >= 50 and not lost
    spool_files_remove(spool)
    assert list(spool.iterdir()) == []


def test_the_cleaner_leaves_a_file_its_own_process_holds(spool):
    """flock is per open file: a spool held by another thread of the cleaner's own process is kept."""
    from backups.storage.spools import BATCH_SPOOL, spool_create, spool_files_remove

    fd, path = spool_create(spool, BATCH_SPOOL)
    try:
        assert spool_files_remove(spool) == (0, 0)
        assert os.path.exists(path)
        with pytest.raises(BlockingIOError):
            other = os.open(path, os.O_RDWR)
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(other)
    finally:
        os.close(fd)
    assert spool_files_remove(spool)[0] == 1 and not os.path.exists(path)


def test_a_clean_up_that_cannot_reach_the_database_still_removes_spools(spool, children, monkeypatch):
    from backups.postgres import leftovers

    child, path = _start(children, RESTORE_SPOOL_CHILD, spool)
    child.kill()

    def down(*args, **kwargs):
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(leftovers, "lock_connection", down)
    removed = leftovers.leftovers_remove()
    assert removed.spool_files == 1 and removed.scratch_databases == [] and not Path(path).exists()
