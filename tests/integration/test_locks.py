"""Advisory locks: 64-bit keys, each held on a connection of its own (not Django's), exclusive across claimers."""

from __future__ import annotations

import logging
import threading

import psycopg
import pytest
from django.db import connection, connections

from backups.backup.run import backup_run
from backups.catalog.manifest import manifest_key
from backups.catalog.records import backup_record_create
from backups.models import BackupRecord
from backups.postgres import pgtools
from backups.postgres.locks import (
    RECORD_NAMESPACE,
    TENANT_NAMESPACE,
    TenantBusy,
    advisory_lock,
    claim_unfinished,
    dump_slot,
    lock_key,
    tenant_lock,
)
from backups.storage import get_storage

BIG_ID = 2**31 + 12345  # past int4: the old (namespace, id) int4 keys overflowed here


def _free(key: int) -> bool:
    """Whether another session can take the key now (taken and given back at once)."""
    with pgtools.connect(autocommit=True) as other:
        taken = other.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
        if taken:
            other.execute("SELECT pg_advisory_unlock(%s)", (key,))
        return taken


def _holder_pids(key: int) -> list[int]:
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    with pgtools.connect(autocommit=True) as other:
        rows = other.execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
                             " AND classid::int8 = %s AND objid::int8 = %s",
                             (unsigned >> 32, unsigned & 0xFFFFFFFF)).fetchall()
    return [r[0] for r in rows]


def test_keys_are_64_bit_and_stable():
    assert lock_key(RECORD_NAMESPACE, BIG_ID) == lock_key(RECORD_NAMESPACE, BIG_ID)
    assert lock_key(RECORD_NAMESPACE, BIG_ID) != lock_key(TENANT_NAMESPACE, BIG_ID)
    assert lock_key(RECORD_NAMESPACE, 2**63 - 1) != lock_key(RECORD_NAMESPACE, 2**63 - 2)
    assert all(-(2**63) <= lock_key(RECORD_NAMESPACE, i) < 2**63 for i in (1, BIG_ID, 2**63 - 1))


@pytest.mark.parametrize("ident", [BIG_ID, 2**63 - 1])
def test_an_id_past_2_31_locks_and_unlocks(ident):
    key = lock_key(RECORD_NAMESPACE, ident)
    with advisory_lock(RECORD_NAMESPACE, ident) as taken:
        assert taken
        assert not _free(key)
    assert _free(key)


def test_a_record_with_an_id_past_2_31_is_claimed_and_backed_up():
    made = backup_record_create(schema_name="clinica_norte")
    made.delete()
    made.pk = BIG_ID
    made.save(force_insert=True)
    try:
        record = backup_run(record_id=BIG_ID)
        assert record.status == BackupRecord.Status.SUCCEEDED, record.error
        assert _free(lock_key(RECORD_NAMESPACE, BIG_ID))
    finally:  # other tests find "their" records by pk > the newest one: leave no giant id behind
        storage = get_storage()
        storage.delete(made.storage_key)
        storage.delete(manifest_key(made.storage_key))
        BackupRecord.objects.filter(pk=BIG_ID).delete()


def test_the_lock_is_held_on_its_own_connection_not_djangos():
    key = lock_key(RECORD_NAMESPACE, 424242)
    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        django_pid = cur.fetchone()[0]
    with advisory_lock(RECORD_NAMESPACE, 424242) as taken:
        assert taken
        holders = _holder_pids(key)
        assert holders and django_pid not in holders
        connection.close()  # what close_old_connections / CONN_MAX_AGE / a pooler do to Django's connection
        assert not _free(key)
        with connection.cursor() as cur:
            cur.execute("DISCARD ALL")  # a pooler's server_reset_query on whatever session Django has now
        assert not _free(key)
    assert _free(key)


def test_two_claimers_of_the_same_record_exclude_each_other():
    record = backup_record_create(schema_name="clinica_demo")
    both_tried = threading.Barrier(2, timeout=20)
    claimed: dict[str, bool] = {}

    def claimer(name: str) -> None:
        try:
            both_tried.wait()
            with claim_unfinished(BackupRecord, record.pk, namespace=RECORD_NAMESPACE,
                                  finished=BackupRecord.FINISHED_STATUSES) as (_, ok):
                claimed[name] = ok
                both_tried.wait()  # neither lets go before the other has tried
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claimer, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed.values()) == [False, True]


def test_a_thread_takes_a_lock_it_holds_again_another_thread_cannot():
    seen: list[str] = []

    def other_thread() -> None:
        try:
            with tenant_lock("clinica_reentrant", what="the other thread"):
                seen.append("taken")
        except TenantBusy as exc:
            seen.append(str(exc))

    with tenant_lock("clinica_reentrant", what="backup 1 (manual)"):
        with tenant_lock("clinica_reentrant", what="its nested part"):
            t = threading.Thread(target=other_thread)
            t.start()
            t.join()
        assert not _free(lock_key(TENANT_NAMESPACE, "clinica_reentrant"))  # the outer hold is still there
    assert seen == ["The other thread cannot start: backup 1 (manual) is running on clinica_reentrant. "
                    "Try again once it finishes."]
    assert _free(lock_key(TENANT_NAMESPACE, "clinica_reentrant"))


def test_a_dead_holder_releases_its_lock(caplog):
    key = lock_key(RECORD_NAMESPACE, 777)
    with caplog.at_level(logging.WARNING, logger="backups.postgres.locks"):
        with advisory_lock(RECORD_NAMESPACE, 777, label="record 777") as taken:
            assert taken
            [pid] = _holder_pids(key)
            with pgtools.connect(autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
            assert _free(key)
    assert "record 777" in caplog.text and "broke while it was held" in caplog.text


def _in_thread(fn):
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join(30)
    return out[0]


def test_dump_slots_are_exclusive_across_threads():
    def one_slot(wait: float):
        with dump_slot(2, wait_seconds=wait, poll_seconds=0.1) as slot:
            return slot

    taken, release = threading.Event(), threading.Event()
    held: list[int | None] = []

    def holder() -> None:
        with dump_slot(2, wait_seconds=0) as slot:
            held.append(slot)
            taken.set()
            release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert taken.wait(30)
        with dump_slot(2, wait_seconds=0) as mine:
            assert mine is not None and held[0] is not None and mine != held[0]
            assert _in_thread(lambda: one_slot(0.3)) is None  # both slots busy: waits, then gives up
        assert _in_thread(lambda: one_slot(0)) == mine  # freed on exit
    finally:
        release.set()
        t.join()


def test_locks_use_the_lock_database_url_when_set(settings):
    settings.BACKUPS_LOCK_DATABASE_URL = "postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=2"
    with pytest.raises(psycopg.OperationalError, match="port 1"):
        with advisory_lock(RECORD_NAMESPACE, 1):
            pass
    db = connection.settings_dict
    settings.BACKUPS_LOCK_DATABASE_URL = (f"postgresql://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
                                          f"/{db['NAME']}")
    with advisory_lock(RECORD_NAMESPACE, 2) as taken:
        assert taken and not _free(lock_key(RECORD_NAMESPACE, 2))
