"""A lock held on one tenant's table (a migration, a stuck job) while several tenants are due: the others are
backed up at once, the locked one retries alone naming the lock and succeeds once it is released, and the reaper
never resends the members of a batch that merely waits (tests/chaos/conftest.py's world)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import psycopg
import pytest

from .conftest import ROOT, World, past, small_schemas, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

LOCK_WAIT = "2"  # BACKUPS_LOCK_WAIT_SECONDS of every process of these scenarios
WATCHDOG = 90.0  # the lock is let go of after this, whatever happens


class HeldLock:
    """ACCESS EXCLUSIVE on one table from its own connection, let go of by release() or after WATCHDOG s."""

    def __init__(self, world: World, table: str) -> None:
        self.conn = psycopg.connect(world.pg.url("chaos"), application_name="chaos-migration")
        self.conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        self.table = table
        self.guard = threading.Lock()
        self.released = False
        self.timer = threading.Timer(WATCHDOG, self.release)
        self.timer.daemon = True
        self.timer.start()

    def release(self) -> None:
        with self.guard:
            if not self.released:
                self.released = True
                self.timer.cancel()
                self.conn.close()


def _env(world: World) -> dict[str, str]:
    return {**world.env, "BACKUPS_LOCK_WAIT_SECONDS": LOCK_WAIT}


def test_cron_path_backs_up_the_others_at_once_and_names_the_lock(chaos: World):
    schemas = small_schemas()
    locked_schema = schemas[2]
    since = chaos.last_record_id()
    slot = chaos.make_due(schemas, past())
    lock = HeldLock(chaos, f"{locked_schema}.clinic_patient")
    try:
        started = time.monotonic()
        run = subprocess.run([sys.executable, "manage.py", "run_scheduled_backups"], cwd=ROOT, env=_env(chaos),
                             capture_output=True, text=True, timeout=120)
        took = time.monotonic() - started
        assert not lock.released, "run_scheduled_backups waited for the lock until the watchdog let go of it"
    finally:
        lock.release()
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    chaos.note("lock on one of 6 due tenants -> cron run finished", took)
    assert took < 60, took
    rows = {r["schema_name"]: r for r in chaos.records(since)}
    assert sorted(rows) == sorted(schemas)
    for schema in schemas:
        if schema != locked_schema:
            assert rows[schema]["status"] == "succeeded", rows[schema]
            assert rows[schema]["slot"] == slot
    stuck = rows[locked_schema]
    assert stuck["status"] == "queued", stuck  # left for the next run (or the reaper) to try again
    assert f"{locked_schema}.clinic_patient" in stuck["error"] and "chaos-migration" in stuck["error"], stuck
    assert f"{locked_schema}.clinic_patient" in run.stdout
    chaos.sql("UPDATE backups_backuprecord SET status = 'failed', error = 'closed by the test' WHERE id = %s",
              (stuck["id"],))


def test_workers_back_up_the_others_while_the_lock_is_held_then_the_locked_one(chaos: World):
    schemas = small_schemas()
    locked_schema = schemas[2]
    since = chaos.last_record_id()
    chaos.env, saved = _env(chaos), chaos.env
    try:
        chaos.beat("beat")
        chaos.worker("w1")
    finally:
        chaos.env = saved
    lock = HeldLock(chaos, f"{locked_schema}.clinic_patient")
    requeued: set[int] = set()
    try:
        slot = chaos.make_due(schemas, past())
        due = time.monotonic()

        def others_done() -> bool:
            for row in chaos.sql("SELECT id FROM backups_backuprecord WHERE id > %s AND stage = 'requeued'",
                                 (since,)):
                requeued.add(row[0])  # the reaper resent it
            rows = [r for r in chaos.records(since) if r["schema_name"] != locked_schema]
            return len(rows) == len(schemas) - 1 and all(r["status"] == "succeeded" for r in rows)

        wait_until(others_done, "the unlocked tenants to be backed up while the lock is held", timeout=60, every=0.2)
        chaos.note("lock on one of 6 due tenants -> the other 5 succeeded (workers)", time.monotonic() - due)
        assert not lock.released, "the batch waited for the lock until the watchdog let go of it"
        [stuck] = [r for r in chaos.records(since) if r["schema_name"] == locked_schema]
        assert stuck["status"] in ("queued", "running"), stuck
        wait_until(lambda: any("chaos-migration" in (r["error"] or "") for r in chaos.records(since)
                               if r["schema_name"] == locked_schema),
                   "the locked tenant's record to name the lock", timeout=30)
        time.sleep(4)  # two reaper periods with the locked tenant retrying: nothing is resent
    finally:
        lock.release()
    released = time.monotonic()
    chaos.wait_finished(since, len(schemas), timeout=120)
    chaos.note("lock released -> the locked tenant succeeded", time.monotonic() - released)
    others = {r["id"] for r in chaos.records(since) if r["schema_name"] != locked_schema}
    assert not requeued & others, f"the reaper resent batch members that were never lost: {requeued & others}"
    chaos.check_invariants(since=since, slots={s: [slot] for s in schemas})
