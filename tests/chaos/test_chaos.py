"""Fault injection against real workers, beats, a private PostgreSQL and a private Redis (tests/chaos/conftest.py).

Each scenario makes slots due, breaks something while the backups run, lets the system recover on its own
(a restarted process, as a supervisor's restart policy does; beat's reaper), then checks the invariants
from the database and the storage.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time

import pytest

from tasks.queues import DISPATCH, HOUSEKEEPING

from .conftest import World, past, small_schemas, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]


def _running_with_bytes(world: World, since: int, schema: str) -> bool:
    rows = [r for r in world.records(since) if r["schema_name"] == schema]
    return bool(rows) and rows[-1]["status"] == "running" and world.sql(
        "SELECT bytes_done FROM backups_backuprecord WHERE id = %s", (rows[-1]["id"],))[0][0] > 0


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_kill9_of_the_worker_mid_dump_and_upload(chaos: World, backend: str):
    s3 = backend == "s3"
    since = chaos.last_record_id()
    chaos.beat("beat", s3=s3)
    worker = chaos.worker("w1", s3=s3)
    slot = chaos.make_due(["chaos_big"], past())
    wait_until(lambda: _running_with_bytes(chaos, since, "chaos_big"), "the big dump to be streaming", timeout=60,
               every=0.05)
    chaos.kill9(worker)  # mid-dump and mid-upload: pg_dump is writing, part of the object is stored
    killed = time.monotonic()
    chaos.worker("w1-restarted", s3=s3)  # the supervisor's restart policy
    [record] = chaos.wait_finished(since, 1, timeout=120)
    chaos.note(f"kill -9 mid-upload ({backend}) -> backup succeeded", time.monotonic() - killed)
    assert record["status"] == "succeeded" and record["attempts"] >= 2, record
    chaos.wait_clean(backend)
    chaos.check_invariants(since=since, slots={"chaos_big": [slot]}, backend=backend)


def test_kill9_at_random_points_of_many_chains(chaos: World):
    """Kills land between the steps of the chain (dump, upload, link, manifest, record, retention)."""
    rng = random.Random(11)
    since = chaos.last_record_id()
    chaos.beat("beat")
    worker = chaos.worker("w1")
    schemas = small_schemas() + ["chaos_big"]
    slot = chaos.make_due(schemas, past())
    for n in range(4):
        time.sleep(rng.uniform(0.3, 2.0))
        chaos.kill9(worker)
        worker = chaos.worker(f"w1-{n}")
    last_kill = time.monotonic()
    chaos.wait_finished(since, len(schemas), timeout=180)
    chaos.note("4 random kill -9 over 7 chains -> all succeeded (after the last kill)", time.monotonic() - last_kill)
    chaos.wait_clean("local")
    chaos.check_invariants(since=since, slots={s: [slot] for s in schemas})


def test_sigterm_mid_dump_finishes_the_running_backup(chaos: World):
    since = chaos.last_record_id()
    chaos.beat("beat")
    worker = chaos.worker("w1")
    slot = chaos.make_due(["chaos_big"], past())
    wait_until(lambda: _running_with_bytes(chaos, since, "chaos_big"), "the big dump to be streaming", every=0.05)
    worker.send_signal(signal.SIGTERM)  # warm shutdown, as `docker stop` does first
    worker.wait(timeout=60)
    [record] = chaos.wait_finished(since, 1, timeout=30)
    assert record["status"] == "succeeded" and record["attempts"] == 1, record
    chaos.check_invariants(since=since, slots={"chaos_big": [slot]})


def test_redis_restart_with_messages_queued_and_with_a_backup_running(chaos: World):
    since = chaos.last_record_id()
    chaos.beat("beat")
    chaos.worker("dispatcher", queues=(DISPATCH, HOUSEKEEPING))  # dispatches and reaps; dumps nothing yet
    queued_slot = chaos.make_due(small_schemas(), past())
    wait_until(lambda: len(chaos.records(since)) == len(small_schemas()), "the tick to queue the backups")
    time.sleep(1)
    chaos.broker.restart(down_seconds=1.0)  # diskless: every queued message is lost
    restarted = time.monotonic()
    worker = chaos.worker("w1")
    chaos.wait_finished(since, len(small_schemas()), timeout=90)  # the reaper resends what was lost
    chaos.note("redis restart lost 6 queued messages -> all succeeded", time.monotonic() - restarted)

    running_since = chaos.last_record_id()
    running_slot = chaos.make_due(["chaos_big"], past())
    wait_until(lambda: _running_with_bytes(chaos, running_since, "chaos_big"), "the big dump to stream", every=0.05)
    chaos.broker.restart(down_seconds=1.0)
    [record] = chaos.wait_finished(running_since, 1, timeout=90)
    assert worker.poll() is None, "the worker died with the broker"
    assert record["status"] == "succeeded", record
    chaos.check_invariants(since=since, slots={**{s: [queued_slot] for s in small_schemas()},
                                               "chaos_big": [running_slot]})


def test_postgresql_restart_mid_dump(chaos: World):
    since = chaos.last_record_id()
    chaos.beat("beat")
    worker = chaos.worker("w1")
    slot = chaos.make_due(["chaos_big"], past())
    wait_until(lambda: _running_with_bytes(chaos, since, "chaos_big"), "the big dump to be streaming", every=0.05)
    chaos.pg.restart()  # every session is cut: pg_dump's, the locks', Django's
    restarted = time.monotonic()
    [record] = chaos.wait_finished(since, 1, timeout=120)
    chaos.note("postgresql restart mid-dump -> backup succeeded", time.monotonic() - restarted)
    assert record["status"] == "succeeded" and record["attempts"] >= 2, record
    assert worker.poll() is None
    chaos.wait_clean("local")
    chaos.check_invariants(since=since, slots={"chaos_big": [slot]})


def test_storage_read_only_then_full_for_a_few_ticks(chaos: World):
    since = chaos.last_record_id()
    chaos.beat("beat")
    chaos.worker("w1")
    subprocess.run(["mount", "-o", "remount,ro", str(chaos.local_root)], check=True)
    try:
        ro_slot = chaos.make_due(small_schemas()[:3], past())
        wait_until(lambda: any(r["error"] for r in chaos.records(since)), "a backup to meet read-only storage")
        time.sleep(4)  # a few ticks
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(chaos.local_root)], check=True)
    fixed = time.monotonic()
    chaos.wait_finished(since, 3, timeout=90)
    chaos.note("read-only storage fixed -> 3 backups succeeded", time.monotonic() - fixed)

    full_since = chaos.last_record_id()
    fillers = []

    def fill() -> None:
        margin = 8192 if fillers else 65536  # tmpfs refuses one fallocate of nearly all its space
        if _free_bytes(chaos) > margin + 4096:
            fillers.append(chaos.local_root / f"filler-{len(fillers)}")
            subprocess.run(["fallocate", "-l", str(_free_bytes(chaos) - margin), str(fillers[-1])],
                           capture_output=True)
            if not fillers[-1].exists():
                fillers.pop()

    try:
        fill()
        fill()  # full before the tenants are due: a batch of small tenants is stored within a tick
        full_slot = chaos.make_due(small_schemas()[3:], past())
        deadline = time.monotonic() + 8  # a few ticks; space freed meanwhile (the reaper, retention) is taken again
        while time.monotonic() < deadline:
            fill()
            time.sleep(0.2)
        assert any("No space" in r["error"] for r in chaos.records(full_since)), chaos.records(full_since)
    finally:
        for filler in fillers:
            filler.unlink(missing_ok=True)
    fixed = time.monotonic()
    chaos.wait_finished(full_since, 3, timeout=90)
    chaos.note("full disk freed -> 3 backups succeeded", time.monotonic() - fixed)
    chaos.check_invariants(since=since, slots={**{s: [ro_slot] for s in small_schemas()[:3]},
                                               **{s: [full_slot] for s in small_schemas()[3:]}})


def _free_bytes(world: World) -> int:
    import os

    st = os.statvfs(world.local_root)
    return st.f_bavail * st.f_frsize


def test_two_beats_for_many_ticks_with_every_tenant_due_again_and_again(chaos: World):
    since = chaos.last_record_id()
    started = chaos.sql("SELECT now()")[0][0]
    chaos.beat("beat-a")
    chaos.beat("beat-b")
    chaos.worker("w1")
    chaos.worker("w2")
    schemas = small_schemas()
    slots: dict[str, list] = {s: [] for s in schemas}
    for n in range(6):  # each round: every tenant due at a new slot, while both beats tick every second
        slot = chaos.make_due(schemas, past(3600 - n * 60))
        for schema in schemas:
            slots[schema].append(slot)
        wait_until(lambda: not chaos.sql("SELECT 1 FROM tenants_clinica WHERE schema_name = ANY(%s) "
                                         "AND next_backup_at <= now()", (schemas,)), "the tick to claim the round")
    chaos.wait_all_done(started, len(schemas) * 6)
    made = chaos.sql("SELECT count(*) FROM backups_backupevent WHERE action = 'create' AND created_at >= %s "
                     "AND actor->>'scheduler' = 'true'", (started,))[0][0]
    assert made == len(schemas) * 6, f"{made} records made for {len(schemas) * 6} slots"
    chaos.check_invariants(since=since, slots=slots)
