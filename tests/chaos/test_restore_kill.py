"""Kill -9 of the process that drives a replace restore, and of it alone, while the backup loads (issue 21, 1).

The OOM killer or a hard time limit kills the parent (`manage.py restore_tenant`, or the Celery pool process
running `restore_backup`), never its whole process group: whatever the parent started, and whatever server
session it opened, is left to end on its own. A replace restore must then leave the live schema exactly as it
was (nothing half loaded is ever published, nothing is left renamed aside as `<schema>_old_<hex>`), and a new
restore must run to completion afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from .conftest import ROOT, World, wait_until
from .procs import alive, descendants, open_files, proc_stat

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]

SCHEMA = "chaos_big"
BIG_TABLE = "blob"
ASIDE_LIKE = SCHEMA.replace("_", r"\_") + r"\_old\_%"
CLIENTS_BOUND = 30.0  # how long the killed restore's children and server sessions may take to end


# --- the live schema --------------------------------------------------------------------------------------

def _state(world: World) -> dict[str, tuple[int, int]]:
    """Table -> (rows, sum of the rows' hashes) of the live schema, read in one snapshot."""
    for attempt in range(5):
        try:
            with psycopg.connect(world.pg.url("chaos"), autocommit=False) as conn:
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                tables = [r[0] for r in conn.execute(
                    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY 1", (SCHEMA,))]
                out = {}
                for table in tables:
                    count, digest = conn.execute(
                        f'SELECT count(*), coalesce(sum(hashtext(t::text)::bigint), 0) FROM "{SCHEMA}"."{table}" t'
                    ).fetchone()
                    out[table] = (count, int(digest))
                return out
        except psycopg.Error:  # a table went between the catalog read and its count (a restore committed)
            if attempt == 4:
                raise
            time.sleep(0.5)
    return {}


def _counts(state: dict[str, tuple[int, int]]) -> dict[str, int]:
    return {table: rows for table, (rows, _) in state.items()}


def _diff(found: dict, wanted: dict) -> dict:
    return {t: (wanted.get(t), found.get(t)) for t in sorted(set(found) | set(wanted)) if found.get(t) != wanted.get(t)}


def _aside(world: World) -> list[str]:
    """Schemas a replace restore renamed aside and left (committed: what any session sees)."""
    return [r[0] for r in world.sql("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (ASIDE_LIKE,))]


def _put_aside_back(world: World) -> None:
    """After a failure: give the rest of the session its clinic back (the newest schema left aside, if any)."""
    aside = world.sql("SELECT n.nspname FROM pg_namespace n WHERE n.nspname LIKE %s ORDER BY xmin::text::bigint",
                      (ASIDE_LIKE,))
    if not aside:
        return
    *older, newest = [r[0] for r in aside]
    world.sql(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
    world.sql(f'ALTER SCHEMA "{newest}" RENAME TO "{SCHEMA}"')
    for name in older:
        world.sql(f'DROP SCHEMA "{name}" CASCADE')


def _env(world: World) -> dict[str, str]:
    """What the world's workers and beats get (project.processes): this environment, then the world's."""
    return {**os.environ, **world.env}


def _manage(world: World, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=_env(world), capture_output=True,
                          text=True, timeout=timeout)


def _prepare(world: World) -> tuple[int, dict, dict]:
    """Back chaos_big up, then change its live data so the backup and the live schema differ.

    Returns (backup record id, the backup's state, the live state now)."""
    started = time.monotonic()
    made = _manage(world, "backup_tenant", SCHEMA, "--no-progress")
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-4000:]
    record_id = int(next(line.split()[1] for line in made.stdout.splitlines() if line.startswith("record ")))
    print(f"backup {record_id} of {SCHEMA} took {time.monotonic() - started:.1f} s")
    backup = _state(world)
    manifest = world.sql("SELECT manifest->'row_counts' FROM backups_backuprecord WHERE id = %s", (record_id,))[0][0]
    assert manifest == {t: n for t, n in _counts(backup).items() if t in manifest}, _diff(_counts(backup), manifest)
    assert BIG_TABLE in manifest
    table = f'"{SCHEMA}"."{BIG_TABLE}"'  # an eighth of the rows go, one changes (whatever earlier scenarios left)
    world.sql(f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} ORDER BY id DESC "
              f"LIMIT (SELECT count(*) / 8 FROM {table}))")
    world.sql(f"UPDATE {table} SET data = 'changed after the backup' WHERE id = (SELECT min(id) FROM {table})")
    live = _state(world)
    assert _counts(live)[BIG_TABLE] < _counts(backup)[BIG_TABLE] and live != backup
    return record_id, backup, live


# --- processes, and their server sessions --------------------------------------------------------------------

def _socket_owners() -> dict[str, set[int]]:
    """socket inode -> pids holding it."""
    owners: dict[str, set[int]] = {}
    for pid, target in open_files():
        if target.startswith("socket:["):
            owners.setdefault(target[8:-1], set()).add(pid)
    return owners


def _backend_owners(world: World) -> dict[int, set[int]]:
    """Server pid of every client session of the private cluster -> the local processes holding its socket."""
    sessions = world.sql("SELECT pid, client_port FROM pg_stat_activity WHERE backend_type = 'client backend' "
                         "AND client_port IS NOT NULL AND pid <> pg_backend_pid()")
    inodes: dict[int, str] = {}  # client port -> inode of the client's end
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote = int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)
            if remote == world.pg.port:
                inodes[local] = fields[9]
    owners = _socket_owners()
    return {pid: owners.get(inodes.get(port, ""), set()) for pid, port in sessions}


def _loading(world: World) -> tuple[int, int] | None:
    """(server pid, rows so far) of a COPY into chaos_big's big table from a client, once rows arrive."""
    rows = world.sql(
        "SELECT a.pid, p.tuples_processed FROM pg_stat_progress_copy p JOIN pg_stat_activity a ON a.pid = p.pid "
        "WHERE p.command = 'COPY FROM' AND p.type = 'PIPE' AND a.query ILIKE %s AND p.tuples_processed > 0",
        (f"%{SCHEMA}%{BIG_TABLE}%",))
    return (rows[0][0], rows[0][1]) if rows else None


def _kill_parent_only(world: World, victim: int, copy_backend: int) -> tuple[set[int], set[int]]:
    """SIGKILL `victim` alone. Returns (its descendants, the server sessions its process tree held)."""
    tree = {victim} | descendants(victim)
    owners = _backend_owners(world)
    sessions = {backend for backend, pids in owners.items() if pids & tree}
    assert copy_backend in sessions, f"the loading session {copy_backend} is not held by {tree}: {owners}"
    os.kill(victim, signal.SIGKILL)
    return tree - {victim}, sessions


def _wait_clients_gone(world: World, children: set[int], sessions: set[int], what: str) -> list[int]:
    """Bounded: the killed process's children end, else they are killed; then its server sessions end.

    Returns the children that had to be killed."""
    deadline = time.monotonic() + CLIENTS_BOUND
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    lingering = [pid for pid in children if alive(pid)]
    for pid in lingering:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def gone():
        return not world.sql("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (list(sessions),))
    wait_until(gone, f"the server sessions of {what} to end", timeout=CLIENTS_BOUND, every=0.1)
    return lingering


# --- the scenarios ----------------------------------------------------------------------------------------

def test_kill9_of_restore_tenant_alone_mid_load_leaves_the_live_schema_untouched(chaos: World):
    record_id, backup, live = _prepare(chaos)
    log = chaos.logs / "restore-kill-command.log"
    proc = None
    children: set[int] = set()
    try:
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "manage.py", "restore_tenant", SCHEMA, str(record_id),
                                     "--noinput"], cwd=ROOT, env=_env(chaos), stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        started = time.monotonic()
        loading = wait_until(lambda: _loading(chaos) or (proc.poll() is not None and "ended"),
                             "the restore to load the big table", timeout=180, every=0.02)
        assert loading != "ended", f"the restore ended before its load was seen: {log.read_text()[-3000:]}"
        copy_backend, rows_in = loading
        children, sessions = _kill_parent_only(chaos, proc.pid, copy_backend)
        killed = time.monotonic()
        proc.wait(timeout=10)
        print(f"killed restore_tenant {proc.pid} {killed - started:.1f} s after its start, {rows_in} rows of "
              f"{BIG_TABLE} loaded; children {sorted(children)}, server sessions {sorted(sessions)}")
        lingering = _wait_clients_gone(chaos, children, sessions, "the killed restore_tenant")
        chaos.note("kill -9 of restore_tenant alone mid-load -> its clients gone", time.monotonic() - killed)

        after = _state(chaos)
        assert _counts(after) == _counts(live), \
            f"the live schema changed (table: (before, now)): {_diff(_counts(after), _counts(live))}"
        assert after == live, f"the live schema's rows changed: {_diff(after, live)}"
        assert _aside(chaos) == [], f"schemas left aside: {_aside(chaos)}"
        assert not lingering, f"children of the killed restore still ran {CLIENTS_BOUND:.0f} s after it: {lingering}"

        again = time.monotonic()
        done = _manage(chaos, "restore_tenant", SCHEMA, str(record_id), "--noinput", timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        chaos.note("kill -9 of restore_tenant alone mid-load -> a new restore succeeded", time.monotonic() - again)
        restored = _state(chaos)
        assert _counts(restored) == _counts(backup), _diff(_counts(restored), _counts(backup))
        assert restored == backup, _diff(restored, backup)
        assert _aside(chaos) == []
    finally:
        for pid in ([proc.pid] if proc is not None else []) + sorted(children):
            stat = proc_stat(pid)
            if stat is not None and proc is not None and stat[2] == proc.pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if proc is not None:
            proc.wait(timeout=10)
        _put_aside_back(chaos)


def _request_replace(world: World, record_id: int) -> int:
    """A RestoreJob (replace) asked for as the API does; its task goes to the world's broker on commit."""
    code = ("from django_tenants.utils import get_tenant_model\n"
            "from backups.models import BackupRecord\n"
            "from backups.restore.jobs import api_restore_request\n"
            f"tenant = get_tenant_model().objects.get(schema_name={SCHEMA!r})\n"
            f"record = BackupRecord.objects.get(pk={record_id})\n"
            "job = api_restore_request(tenant=tenant, record=record, mode='replace', confirm=tenant.schema_name,\n"
            "                          actor={'command': 'chaos test'}, ip_address=None)\n"
            "print('job', job.pk)\n")
    made = _manage(world, "shell", "-c", code, timeout=60)
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-4000:]
    return int(next(line.split()[1] for line in made.stdout.splitlines() if line.startswith("job ")))


def _job(world: World, job_id: int) -> dict:
    cols = ("status", "error", "report", "task_id", "started_at", "finished_at")
    row = world.sql(f"SELECT {', '.join(cols)} FROM backups_restorejob WHERE id = %s", (job_id,))[0]
    return dict(zip(cols, row, strict=True))


def test_kill9_of_the_pool_process_mid_load_leaves_the_live_schema_untouched(chaos: World):
    record_id, backup, live = _prepare(chaos)
    since = chaos.last_record_id()
    chaos.beat("beat")  # runs the reaper every BACKUPS_REAPER_SECONDS
    worker = chaos.worker("w1")
    children: set[int] = set()
    try:
        job_id = _request_replace(chaos, record_id)
        started = time.monotonic()
        loading = wait_until(lambda: _loading(chaos) or (_job(chaos, job_id)["status"] in ("succeeded", "failed")
                                                         and "ended"),
                             "the restore job to load the big table", timeout=180, every=0.02)
        assert loading != "ended", f"restore job {job_id} ended before its load was seen: {_job(chaos, job_id)}"
        copy_backend, rows_in = loading
        owner = next(iter(_backend_owners(chaos).get(copy_backend) or {0}))
        pool = owner
        while pool and (stat := proc_stat(pool)) is not None and stat[1] != worker.pid:
            pool = stat[1]
        assert pool and proc_stat(pool) is not None and proc_stat(pool)[1] == worker.pid, \
            f"the loading session {copy_backend} (held by {owner}) is not in a pool process of worker {worker.pid}"
        children, sessions = _kill_parent_only(chaos, pool, copy_backend)
        killed = time.monotonic()
        print(f"killed pool process {pool} of worker {worker.pid} {killed - started:.1f} s after the request, "
              f"{rows_in} rows of {BIG_TABLE} loaded; children {sorted(children)}, server sessions {sorted(sessions)}")
        lingering = _wait_clients_gone(chaos, children, sessions, "the killed pool process")
        chaos.note("kill -9 of the restore's pool process mid-load -> its clients gone", time.monotonic() - killed)

        # A redelivery may already run again: the live schema is the old one or, once that committed, the backup.
        now = _state(chaos)
        assert now in (live, backup), \
            (f"the live schema is neither its data before the restore nor the backup (table: (before, now)): "
             f"{_diff(_counts(now), _counts(live))}")
        assert _aside(chaos) == [], f"schemas left aside: {_aside(chaos)}"
        assert not lingering, f"children of the killed pool process still ran {CLIENTS_BOUND:.0f} s after: {lingering}"

        try:
            wait_until(lambda: _job(chaos, job_id)["status"] in ("succeeded", "failed"),
                       f"restore job {job_id} to finish", timeout=240, every=0.5)
        except AssertionError:
            raise AssertionError(f"restore job {job_id} stays {_job(chaos, job_id)}") from None
        job = _job(chaos, job_id)
        chaos.note(f"kill -9 of the restore's pool process mid-load -> job {job['status']}", time.monotonic() - killed)
        print(f"restore job {job_id}: {job['status']} {job['error'][:300]!r}")
        assert worker.poll() is None, "the worker's main process died with its pool process"
        final = _state(chaos)
        if job["status"] == "failed":
            assert job["error"].strip(), job
            assert final == live, f"job failed but the live schema changed: {_diff(final, live)}"
        else:
            assert final == backup, f"job succeeded but the schema is not the backup: {_diff(final, backup)}"
        assert _aside(chaos) == [], f"schemas left aside: {_aside(chaos)}"

        safety = chaos.sql("SELECT id, status, manifest->'row_counts', error FROM backups_backuprecord "
                           "WHERE id > %s AND schema_name = %s AND backup_type = 'pre_restore' ORDER BY id",
                           (since, SCHEMA))
        print(f"safety backups: {[(r[0], r[1]) for r in safety]}")
        taken = {row[0]: {t: n for t, n in (row[2] or {}).items()} for row in safety if row[1] == "succeeded"}
        wrong = {rid: _diff(counts, {t: n for t, n in _counts(live).items() if t in counts})
                 for rid, counts in taken.items() if counts != {t: n for t, n in _counts(live).items() if t in counts}}
        assert not wrong, f"safety backups taken from data the killed restore touched (table: (live, saved)): {wrong}"
        assert len(safety) <= 1, f"{len(safety)} safety backups for one restore job: {safety}"
        chaos.wait_quiet()
    finally:
        for pid in sorted(children):
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        chaos.stop_all()
        _put_aside_back(chaos)
