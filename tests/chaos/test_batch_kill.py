"""Kill -9 of the pool process running a batched dump, and of it alone (issue 22, part 6).

Several tenants due at one tick are dumped by one `run_backup_batch` task: one pg_dump into a spool file, then
each member split out and stored. The OOM killer (or a hard time limit) kills that pool process, never the
worker's process group: the worker's main process lives on and starts a new pool process, its pg_dump (if it
still ran) is left to end on its own. The batch's members must all end succeeded (the message comes back, the
reaper resends what the dead process held), one backup a slot with nothing partial stored, and the killed
process's spool file must be removed (it no longer holds its flock) by the reaper.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from .conftest import World, past, small_schemas, wait_until
from .procs import alive, children, open_files, proc_stat

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]

SCHEMAS = [*small_schemas(), "chaos_big"]  # 7 due at once: one batch (BACKUPS_BATCH_MIN_SIZE is 10), chaos_big
# makes its pg_dump and its split last long enough to be killed in the middle
BATCH_SPOOL = ("tenant-backups-batch-", ".dump")  # backups.postgres.leftovers
SPOOL_BOUND = 30.0  # the reaper runs every BACKUPS_REAPER_SECONDS (2 s here)


def _spools(spool_dir: Path) -> list[Path]:
    prefix, suffix = BATCH_SPOOL
    return [p for p in spool_dir.iterdir() if p.name.startswith(prefix) and p.name.endswith(suffix)]


def _holders(path: Path) -> set[int]:
    """Pids with `path` open."""
    return {pid for pid, target in open_files() if target == str(path)}


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _batch_under_way(world: World, since: int, spool_dir: Path, worker_pid: int):
    """(spool file, pool pid, pg_dump pid or None, running records) once a batch of 2 or more members runs in a
    pool process of the worker with its spool file past 1 MiB (pg_dump writing the big tenant, or the split)."""
    running = world.sql("SELECT id, task_id FROM backups_backuprecord WHERE id > %s AND status = 'running'",
                        (since,))
    by_task: dict[str, list[int]] = {}
    for rid, task in running:
        by_task.setdefault(task, []).append(rid)
    batch = max(by_task.values(), key=len, default=[])
    if len(batch) < 2:
        return None
    for spool in _spools(spool_dir):
        try:
            if spool.stat().st_size < (1 << 20):
                continue
        except FileNotFoundError:
            continue
        pools = [pid for pid in _holders(spool) if (stat := proc_stat(pid)) is not None and stat[1] == worker_pid]
        if pools:
            pool = pools[0]
            dumps = [pid for pid in children(pool) if _comm(pid) == "pg_dump"]
            return spool, pool, (dumps[0] if dumps else None), batch
    return None


def test_kill9_of_the_pool_process_mid_batch_then_a_new_worker_finishes(chaos: World):
    spool_dir = Path(tempfile.mkdtemp(prefix="tb-chaos-spool-"))
    orphans: list[int] = []
    since = chaos.last_record_id()
    saved = chaos.env
    chaos.env = {**saved, "BACKUPS_SPOOL_DIR": str(spool_dir)}  # every process of this scenario
    try:
        chaos.beat("beat")  # runs the reaper (and its spool clean-up) every BACKUPS_REAPER_SECONDS
        worker = chaos.worker("w1")
        slot = chaos.make_due(SCHEMAS, past())
        due = time.monotonic()
        spool, pool, pg_dump, batch = wait_until(
            lambda: _batch_under_way(chaos, since, spool_dir, worker.pid), "a batch's dump to be under way",
            timeout=90, every=0.02)
        phase = "mid-dump" if pg_dump is not None and alive(pg_dump) else "mid-split/upload"
        size = spool.stat().st_size if spool.exists() else 0
        if pg_dump is not None:
            orphans.append(pg_dump)
        os.kill(pool, signal.SIGKILL)  # the pool process alone, not the worker's group
        killed = time.monotonic()
        print(f"killed pool process {pool} of worker {worker.pid} {killed - due:.1f} s after the slot was due "
              f"({phase}, pg_dump {pg_dump}, spool {spool.name} at {size} bytes); batch records {sorted(batch)}")

        wait_until(lambda: not spool.exists(), f"the killed process's spool {spool.name} to be removed",
                   timeout=SPOOL_BOUND, every=0.2)
        chaos.note(f"kill -9 of a batch's pool process ({phase}) -> its spool removed", time.monotonic() - killed)
        assert worker.poll() is None, "the worker's main process died with its pool process"

        chaos.worker("w2")  # a second worker, as a supervisor scaling back up would start
        rows = chaos.wait_finished(since, len(SCHEMAS), timeout=180)
        chaos.note(f"kill -9 of a batch's pool process ({phase}) -> {len(SCHEMAS)} backups succeeded",
                   time.monotonic() - killed)
        assert sorted(r["schema_name"] for r in rows) == sorted(SCHEMAS), rows
        assert all(r["status"] == "succeeded" for r in rows), [(r["schema_name"], r["status"], r["error"])
                                                               for r in rows]
        assert all(r["slot"] == slot for r in rows), rows
        print("attempts:", {r["schema_name"]: r["attempts"] for r in rows})
        assert worker.poll() is None, "the worker's main process died"
        log = (chaos.logs / "w1.log").read_text(errors="replace")
        assert f"pid:{pool} exited with 'signal 9" in log or "WorkerLostError" in log, \
            f"the worker did not report its lost pool process {pool}: {log[-3000:]}"

        chaos.wait_clean("local")
        chaos.check_invariants(since=since, slots={s: [slot] for s in SCHEMAS})
        if pg_dump is not None:  # left to end on its own: it only writes an unlinked file
            wait_until(lambda: not alive(pg_dump), f"the killed batch's pg_dump {pg_dump} to end", timeout=60)
        wait_until(lambda: not _spools(spool_dir), "no batch spool file to be left", timeout=SPOOL_BOUND)
    finally:
        chaos.env = saved
        chaos.stop_all()
        for pid in orphans:
            if alive(pid) and _comm(pid) == "pg_dump":
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(spool_dir, ignore_errors=True)
