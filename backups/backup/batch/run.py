"""Back up several tenants from one pg_dump: one snapshot, one catalog read, one artifact per tenant.

pg_dump reads the whole catalog on every call, so dumping tenants one by one costs O(tenants) each and a
fleet pass O(tenants²). A batch runs ONE `pg_dump -Fc -Z0 -n s1 ... -n sK` into a spool file, reads its
table of contents once (backups.backup.batch.split) and streams each member's custom-format archive into that
member's own sink: stored as is for `dump`, through `pg_restore -f -` for `sql` (byte for byte what
`pg_dump -n` writes). Every member keeps its own object, manifest, digests, record, name and key.

Invariants kept: each member's record is claimed with its own advisory lock (a redelivered batch skips
what finished or what another worker holds), the tenant's lock is held as a single backup holds it, the
batch takes ONE dump slot (it is one dump against the server), nothing is visible before its size is
confirmed, and a member that fails fails alone: a member whose schema is missing, whose split or upload
fails, is marked failed (or queued and retried alone, for transient errors); when the batch dump itself
fails, every member runs alone through backup_run, so each gets its own outcome and message.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from django.utils import timezone

from backups.backup.after_success import after_success
from backups.backup.artifact import artifact_writer, store_and_confirm
from backups.backup.batch.split import BatchArchive, MemberPart, SplitError, restrict_key
from backups.backup.run import backup_run, describe_error, settle_failure
from backups.catalog.records import (
    Success,
    backup_record_mark_failed,
    backup_record_mark_queued,
    backup_record_mark_running,
    backup_record_take_free_key,
    backup_records_mark_running,
    backup_records_mark_succeeded,
)
from backups.conf import backups_settings
from backups.core.errors import BackupConfigError, BackupError, DumpFailed, SchemaNotFound, TransientBackupError
from backups.models import BackupRecord
from backups.postgres import pgtools, privileges
from backups.postgres.dumpers import (
    DumpInfo,
    bound_lock_waits,
    installed_extensions,
    large_object_references,
    lock_wait_error,
    locked_relations,
    pg_dump_lock_args,
    pg_dump_lock_timeout,
)
from backups.postgres.locks import RECORD_NAMESPACE, TENANT_NAMESPACE, dump_slot, hold_many, lock_key
from backups.postgres.pipes import piped
from backups.storage import Storage, get_storage
from backups.storage.spools import BATCH_SPOOL, SPOOL_MARGIN, spool_create, spool_dir

logger = logging.getLogger(__name__)

BATCH_FORMATS = (BackupRecord.Format.SQL, BackupRecord.Format.DUMP)
# Succeeded members are recorded in groups (one UPDATE, one INSERT, one tenants UPDATE, one retention read) of at
# most this many; a group is also recorded before the next member starts once its first success is this old. Until
# then a member stays `running` with its object stored (nothing offers it; a dead worker's is run again).
RECORD_GROUP = 50
RECORD_GROUP_SECONDS = 2.0


@dataclass
class BatchResult:
    """What one batch did: record ids by outcome; `retry` are members to send again, alone."""

    succeeded: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    retry: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # finished already, or held by another worker
    alone: list[int] = field(default_factory=list)  # run through backup_run (json, or the batch dump failed)
    errors: dict[int, str] = field(default_factory=dict)  # why each `retry` member must be tried again

    def again(self, record: BackupRecord, error: str) -> None:
        """Put a member back to `queued` with why, to be tried again alone."""
        backup_record_mark_queued(record=record, error=error)
        self.retry.append(record.pk)
        self.errors[record.pk] = error
    dumped: int = 0  # members dumped by the batch's one pg_dump


# ----------------------------------------------------------------------------- sizing


@dataclass(frozen=True)
class LockBudget:
    """The server's lock table and the share one batch may take of it."""

    max_locks_per_transaction: int
    max_connections: int
    max_prepared_transactions: int

    @property
    def table(self) -> int:
        """Lock slots shared by all sessions: max_locks_per_transaction x (max_connections + prepared)."""
        return self.max_locks_per_transaction * (self.max_connections + self.max_prepared_transactions)

    @property
    def per_batch(self) -> int:
        """Slots one batch may hold: BACKUPS_BATCH_LOCK_SHARE of the table, split over the dump slots."""
        share = backups_settings.BACKUPS_BATCH_LOCK_SHARE
        return int(self.table * share / max(1, backups_settings.BACKUPS_MAX_CONCURRENT_DUMPS))


def lock_budget(conn=None) -> LockBudget:
    """Read the lock table's size from the server (never assumed)."""
    with contextlib.ExitStack() as stack:
        if conn is None:
            conn = stack.enter_context(pgtools.connect(autocommit=True))
        row = conn.execute("SELECT current_setting('max_locks_per_transaction')::int, "
                           "current_setting('max_connections')::int, "
                           "current_setting('max_prepared_transactions')::int").fetchone()
    return LockBudget(*row)


def locks_per_member(tables: int) -> int:
    """Locks one member costs: pg_dump's ACCESS SHARE on each table and sequence, the record's and the tenant's
    advisory locks."""
    return tables + 2


def batch_sizes(count: int) -> int:
    """How many records to put in each batch message when `count` are sent at once.

    At most BACKUPS_BATCH_SIZE, and spread so every dump slot gets the same share: a pass of 1,000 tenants on 4
    slots is 4 batches of 250, not one of 1,000 and three idle slots, and 10,000 tenants in batches of at most
    1,600 on 2 slots are 8 of 1,250 (4 a slot), not 6 of 1,600 and one of 400 that leaves a slot idle at the end.
    Never below BACKUPS_BATCH_MIN_SIZE: a few due tenants share one dump rather than each paying the catalog read.
    The worker still cuts a batch that would not fit the server's lock table or the spool's free space.
    """
    slots = max(1, backups_settings.BACKUPS_MAX_CONCURRENT_DUMPS)
    size = max(1, backups_settings.BACKUPS_BATCH_SIZE)
    batches = -(-max(1, count) // size)
    batches = -(-batches // slots) * slots  # a whole number of batches for every slot
    return max(1, min(size, max(backups_settings.BACKUPS_BATCH_MIN_SIZE, -(-count // batches))))


def batch_check(conn=None) -> str:
    """Start-up check: raise BackupConfigError when batches cannot fit the server or the spool; say what fits."""
    if not batching_enabled():
        return "batched dumps are off (BACKUPS_BATCH_SIZE < 2)"
    budget = lock_budget(conn)
    tables = backups_settings.BACKUPS_BATCH_TABLES_PER_TENANT
    fits = budget.per_batch // locks_per_member(tables)
    if fits < 2:
        raise BackupConfigError(
            "Batched dumps cannot fit the server's lock table: max_locks_per_transaction="
            f"{budget.max_locks_per_transaction} x (max_connections={budget.max_connections} + "
            f"max_prepared_transactions={budget.max_prepared_transactions}) = {budget.table} slots; "
            f"BACKUPS_BATCH_LOCK_SHARE={backups_settings.BACKUPS_BATCH_LOCK_SHARE} over BACKUPS_MAX_CONCURRENT_DUMPS="
            f"{backups_settings.BACKUPS_MAX_CONCURRENT_DUMPS} leaves {budget.per_batch} per batch, fewer than two "
            f"tenants of {tables} tables (BACKUPS_BATCH_TABLES_PER_TENANT). Raise max_locks_per_transaction on the "
            "server, lower BACKUPS_MAX_CONCURRENT_DUMPS, or set BACKUPS_BATCH_SIZE=1 to dump tenants one by one.")
    spool = spool_dir()
    try:
        free = shutil.disk_usage(spool).free
    except OSError as exc:
        raise BackupConfigError(f"BACKUPS_SPOOL_DIR {spool} cannot be used for batched dumps: "
                                f"{exc.strerror or exc}.") from None
    limit = backups_settings.BACKUPS_BATCH_MAX_SPOOL_BYTES
    if free < limit + SPOOL_MARGIN:
        raise BackupConfigError(
            f"BACKUPS_SPOOL_DIR {spool} has {free} bytes free, less than BACKUPS_BATCH_MAX_SPOOL_BYTES={limit} plus "
            f"a {SPOOL_MARGIN} byte margin that a batched dump may spool: free space there or lower the setting.")
    return (f"batched dumps: up to {min(fits, backups_settings.BACKUPS_BATCH_SIZE)} tenants of {tables} tables a "
            f"batch ({budget.per_batch} of the server's {budget.table} lock slots), spool {spool} up to {limit} bytes")


def batching_enabled() -> bool:
    """BACKUPS_BATCH_SIZE of 2 or more turns batched dumps on."""
    return backups_settings.BACKUPS_BATCH_SIZE >= 2


# ----------------------------------------------------------------------------- running


def batch_backup_run(*, record_ids: list[int], task_id: str = "") -> BatchResult:
    """Back up the records' tenants: the one entry of the backup pipeline, for a batch of many or of one.

    Every member ends succeeded (its after-success done), failed, skipped (finished, or another worker's), or
    listed in `retry` with why (`errors`): the caller retries those (a task with backoff, a batch by sending
    them alone). One member, or a json one, streams its own dump through backup_run."""
    result = BatchResult()
    # (pk, format, schema) only: the claimed members are loaded whole once, after their locks are held (a batch of
    # thousands must not keep two model instances a member)
    rows = {pk: (fmt, schema) for pk, fmt, schema in BackupRecord.objects.filter(pk__in=record_ids)
            .exclude(status__in=BackupRecord.FINISHED_STATUSES).values_list("pk", "format", "schema_name")}
    result.skipped += [pk for pk in record_ids if pk not in rows]
    ordered = [(pk, *rows[pk]) for pk in record_ids if pk in rows]
    # json is Django's own dumper (one tenant's transaction); it stays per tenant
    for pk, fmt, _ in ordered:
        if fmt not in BATCH_FORMATS:
            _run_alone(pk, task_id, result)
    members = [(pk, schema) for pk, fmt, schema in ordered if fmt in BATCH_FORMATS]
    if len(members) == 1:  # a batch of one streams its own pg_dump (no spool), waiting for its locks as it must
        _run_alone(members[0][0], task_id, result)
        return result
    if not members:
        return result
    keys = []
    for pk, schema in members:
        keys += [lock_key(RECORD_NAMESPACE, pk), lock_key(TENANT_NAMESPACE, schema)]
    with hold_many(list(dict.fromkeys(keys)), label=f"backup batch of {len(members)}") as taken:
        claimed, busy = [], []
        for pk, schema in members:
            mine = lock_key(RECORD_NAMESPACE, pk) in taken, lock_key(TENANT_NAMESPACE, schema) in taken
            if all(mine):
                claimed.append(pk)
            elif mine[0]:  # our record, but a restore (or another backup) of the tenant runs: retry it alone
                busy.append(pk)
            else:
                result.skipped.append(pk)
        for record in BackupRecord.objects.filter(pk__in=busy):
            result.again(record, "Another backup or restore of this tenant was running; retrying alone.")
        fresh = {r.pk: r for r in BackupRecord.objects.filter(pk__in=claimed)
                 .exclude(status__in=BackupRecord.FINISHED_STATUSES)}
        result.skipped += [pk for pk in claimed if pk not in fresh]
        claimed = [fresh[pk] for pk in claimed if pk in fresh]
        if claimed:
            _run_claimed_batch(claimed, task_id, result)
    return result


def _run_alone(record_id: int, task_id: str, result: BatchResult) -> None:
    """One member through the single-tenant path (locks already held by this thread are re-entered)."""
    result.alone.append(record_id)
    try:
        record = backup_run(record_id=record_id, task_id=task_id)
    except TransientBackupError as exc:
        result.retry.append(record_id)
        result.errors[record_id] = str(exc)
        return
    if record is None:
        result.skipped.append(record_id)
    elif record.status == BackupRecord.Status.SUCCEEDED:
        result.succeeded.append(record_id)
        after_success([record])
    elif record.status == BackupRecord.Status.FAILED:
        result.failed.append(record_id)
    else:
        result.skipped.append(record_id)


def _run_claimed_batch(members: list[BackupRecord], task_id: str, result: BatchResult) -> None:
    """Members this worker holds: take a dump slot, then dump them in parts that fit the lock table and spool."""
    with dump_slot(backups_settings.BACKUPS_MAX_CONCURRENT_DUMPS,
                   wait_seconds=backups_settings.BACKUPS_DUMP_SLOT_WAIT_SECONDS) as slot:
        if slot is None:
            for record in members:
                result.again(record, f"All {backups_settings.BACKUPS_MAX_CONCURRENT_DUMPS} dump slots stayed busy "
                                     "(BACKUPS_MAX_CONCURRENT_DUMPS); will retry.")
            return
        with pgtools.connect(autocommit=True) as conn:
            bound_lock_waits(conn)
            sizes, locked = _sizes_of_unlocked(conn, [r.schema_name for r in members])
            budget = lock_budget(conn)
            server_version = conn.execute("SELECT current_setting('server_version')").fetchone()[0]
            extensions = installed_extensions(conn)
        present = []
        for record in members:
            if record.schema_name in locked:
                _retry_locked(record, locked[record.schema_name], result)
            elif record.schema_name not in sizes:
                backup_record_mark_running(record=record, task_id=task_id)
                backup_record_mark_failed(record=record, error=describe_error(
                    SchemaNotFound(f"Schema {record.schema_name!r} does not exist in the database.")))
                result.failed.append(record.pk)
            else:
                present.append(record)
        for part in _parts(present, sizes, budget):
            _dump_part(part, task_id, result, server_version, extensions, sizes)


def _parts(members: list[BackupRecord], sizes: dict[str, tuple[int, int]],
           budget: LockBudget) -> Iterator[list[BackupRecord]]:
    """Cut the members into parts whose locks fit the batch's share of the lock table and whose estimated
    spool fits BACKUPS_BATCH_MAX_SPOOL_BYTES (a tenant bigger than that alone is a part of one: it streams)."""
    max_spool = backups_settings.BACKUPS_BATCH_MAX_SPOOL_BYTES
    max_members = max(1, backups_settings.BACKUPS_BATCH_SIZE)
    part: list[BackupRecord] = []
    locks = spool = 0
    for record in members:
        tables, size = sizes[record.schema_name]
        need = locks_per_member(tables)
        if part and (locks + need > budget.per_batch or spool + size > max_spool or len(part) >= max_members):
            yield part
            part, locks, spool = [], 0, 0
        part.append(record)
        locks += need
        spool += size
    if part:
        yield part


def _sizes_of_unlocked(conn, schemas: list[str], tries: int = 3
                       ) -> tuple[dict[str, tuple[int, int]], dict[str, list[str]]]:
    """(_schema_sizes of the schemas none of whose tables another session locks exclusively, the locked ones with
    their locked tables named): a member whose table is locked must not hold up the rest of its batch, so it is
    left out before anything waits on it. A lock taken meanwhile cuts pg_table_size's wait (lock_timeout) and the
    schemas are looked at again."""
    locked: dict[str, list[str]] = {}
    for attempt in range(tries):
        locked.update(locked_relations(schemas, conn))
        try:
            return _schema_sizes(conn, [s for s in schemas if s not in locked]), locked
        except psycopg.errors.LockNotAvailable:
            if attempt == tries - 1:
                raise lock_wait_error(schemas, what="Measuring the batch's schemas") from None
    raise AssertionError("unreachable")


def _retry_locked(record: BackupRecord, tables: list[str], result: BatchResult) -> None:
    """A member whose tables another session holds exclusively: sent again alone, where it waits for them at most
    BACKUPS_LOCK_WAIT_SECONDS and then retries with backoff like any busy database; the rest of the batch goes on."""
    result.again(record, f"Table {'; '.join(tables)} was locked exclusively by another session during the tenant's "
                         "batched dump; it is backed up alone instead.")


def _schema_sizes(conn, schemas: list[str]) -> dict[str, tuple[int, int]]:
    """Per existing schema: the relations pg_dump locks (tables and sequences, measured: 27 locks a demo tenant
    of 13 tables and 12 sequences, with our 2 advisory ones; views counted to be safe), and the bytes its
    data may spool (heap + TOAST)."""
    rows = conn.execute(
        "SELECT n.nspname, count(c.oid) FILTER (WHERE c.relkind IN ('r', 'p', 'S', 'm', 'f', 'v')), "
        "coalesce(sum(pg_table_size(c.oid)) FILTER (WHERE c.relkind IN ('r', 'p', 'm')), 0) "
        "FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid "
        "WHERE n.nspname = ANY(%s) GROUP BY n.nspname", (schemas,)).fetchall()
    return {name: (int(tables), int(size)) for name, tables, size in rows}


@contextlib.contextmanager
def _spooled_dump(schemas: list[str], estimate: int) -> Iterator[Path]:
    """`pg_dump -Fc -Z0` of the schemas into a spool file (so the archive's table of contents holds each table's
    data offset), held with a flock while used and removed on every exit path."""
    base = spool_dir()
    free = shutil.disk_usage(base).free
    if free < estimate + SPOOL_MARGIN:
        raise TransientBackupError(f"Not enough free disk space in {base} (BACKUPS_SPOOL_DIR) for a batched dump: "
                                   f"it needs about {estimate + SPOOL_MARGIN} bytes, {free} are free.")
    # held with a flock until closed: a dead process's spool is removed by the next clean-up, a live one never
    fd, path = spool_create(base, BATCH_SPOOL)
    try:
        target = Path(path)
        bins = pgtools.binaries()
        # --no-sync: the spool is scratch, removed after the split; fsyncing it is pure cost
        cmd = [bins.pg_dump, "--format=custom", "--compress=0", "--no-owner", "--no-acl", "--strict-names",
               "--no-sync", f"--file={target}", *pg_dump_lock_args()]
        cmd += [f"--schema={pgtools.quote_ident(s)}" for s in schemas]
        with piped(cmd, env=pgtools.pg_dump_env(), read_stdout=False) as child:
            returncode = child.wait()
        if returncode != 0:
            raise DumpFailed(f"pg_dump of the batch exited with status {returncode}: {child.message}")
        yield target
    finally:
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        os.close(fd)


def _dump_part(part: list[BackupRecord], task_id: str, result: BatchResult, server_version: str,
               extensions: list[dict[str, str]], sizes: dict[str, tuple[int, int]]) -> None:
    """One pg_dump for the part, then each member's artifact; the whole part runs alone if the dump fails."""
    if len(part) == 1:
        _run_alone(part[0].pk, task_id, result)
        return
    backup_records_mark_running(records=part, task_id=task_id)
    schemas = [r.schema_name for r in part]
    estimate = sum(sizes[s][1] for s in schemas)
    done = _Recorder(result)
    try:
        with _spooled_dump(schemas, estimate) as spooled:
            archive = BatchArchive(spooled)
            pieces = archive.members(schemas)
            result.dumped += len(part)
            with pgtools.connect(autocommit=True) as conn, conn.cursor() as cur:
                bound_lock_waits(cur)
                try:
                    refused = large_object_references(schemas, cur)
                    granted = privileges.capture(cur, schemas)
                except psycopg.errors.LockNotAvailable:
                    raise lock_wait_error(schemas, what="Reading the batch's tables") from None
            tool_version = pgtools.binaries().version
            sql = _SqlWriter(archive)
            storages: dict[str, Storage] = {}
            try:
                for record in part:
                    done.tick()
                    _member(record, archive, pieces[record.schema_name],
                            DumpInfo(server_version, "pg_dump", tool_version, extensions=extensions,
                                     privileges=granted[record.schema_name]), result, done,
                            sql, storages, refused.get(record.schema_name))
            finally:
                done.flush()
    except (BackupError, OSError) as exc:
        # the batch as a whole failed (a schema dropped meanwhile, a split it cannot do): each member alone
        logger.warning("batch dump of %d tenants failed, dumping them one by one: %s", len(part), describe_error(exc))
        # a lock that outlasted BACKUPS_LOCK_WAIT_SECONDS: the members still locked are sent again alone at once
        # (they would only wait the same time again here), the others are dumped alone now
        locked = (locked_relations(schemas) if isinstance(exc, TransientBackupError) or pg_dump_lock_timeout(str(exc))
                  else {})
        for record in part:
            if record.pk not in result.succeeded and record.pk not in result.failed and record.pk not in result.retry:
                if record.schema_name in locked:
                    _retry_locked(record, locked[record.schema_name], result)
                    continue
                backup_record_mark_queued(record=record, error="")
                _run_alone(record.pk, task_id, result)


class _Recorder:
    """Succeeded members, recorded a group at a time (see RECORD_GROUP): marked succeeded with their events, the
    tenants' last_backup_at moved, retention applied to the automatic ones' tenants."""

    def __init__(self, result: BatchResult) -> None:
        self.result = result
        self.pending: list[Success] = []
        self.since = 0.0

    def add(self, success: Success) -> None:
        if not self.pending:
            self.since = time.monotonic()
        self.pending.append(success)
        if len(self.pending) >= RECORD_GROUP:
            self.flush()

    def tick(self) -> None:
        """Before a member starts: record the group if it has waited long enough."""
        if self.pending and time.monotonic() - self.since >= RECORD_GROUP_SECONDS:
            self.flush()

    def flush(self) -> None:
        group, self.pending = self.pending, []
        if not group:
            return
        backup_records_mark_succeeded(successes=group)
        self.result.succeeded += [s.record.pk for s in group]
        records = [s.record for s in group]
        after_success(records)
        for record in records:
            # the manifest is in the database now; a batch of thousands must not keep every one in memory (Django
            # reloads a field missing from the instance when it is read)
            record.__dict__.pop("manifest", None)


def _member(record: BackupRecord, archive: BatchArchive, piece: MemberPart, info: DumpInfo,
            result: BatchResult, done: _Recorder, sql: _SqlWriter, storages: dict[str, Storage],
            refusal: str | None = None) -> None:
    """Store one member's artifact; its failure is its own (`refusal`: why it must fail, its large objects)."""
    try:
        if refusal:
            raise DumpFailed(refusal)
        storage = storages.get(record.storage_backend)
        if storage is None:
            storage = storages[record.storage_backend] = get_storage(record.storage_backend)
        backup_record_take_free_key(record=record, storage=storage)
        info.row_counts = archive.row_counts(piece)
        info.migrations = archive.migrations(piece)
        sink_result = _write_member(record, storage, archive, piece, sql)
        manifest = store_and_confirm(record, storage, info, sink_result)
    except Exception as exc:  # noqa: BLE001 - one member's failure (or bug) is its own, never its neighbours'
        failure = settle_failure(record, exc)  # the same rule as a single backup: a full volume, a 5xx, ...
        if failure.transient:
            result.retry.append(record.pk)
            result.errors[record.pk] = failure.message
            return
        if not (failure.expected or isinstance(exc, SplitError)):
            logger.exception("batch member %s failed", record.pk)
        result.failed.append(record.pk)
        return
    done.add(Success(record, size=sink_result.size, sha256=sink_result.sha256, plain_size=sink_result.plain_size,
                     plain_sha256=sink_result.plain_sha256, manifest=manifest, finished_at=timezone.now()))


class _SqlWriter:
    """A member's plain SQL for an `sql` backup: written from the archive by BatchArchive.write_sql (no process per
    member) once pg_restore itself agreed, byte for byte, on a member of this batch with the same features (entry
    kinds, tablespaces, access methods): that member's SQL is pg_restore's, with the key both used. A member with
    features not yet checked is checked the same way; after a disagreement the rest of the batch goes through
    pg_restore. Every member gets its own random restrict key."""

    def __init__(self, archive: BatchArchive) -> None:
        self.archive = archive
        self.verified: set[str] = set()
        self.trusted = _pg_restore_has_restrict_key(pgtools.binaries().pg_restore)

    def write(self, piece: MemberPart, out: Callable[[bytes], None], read_size: int) -> None:
        features = self.archive.sql_features(piece) if self.trusted else None
        if features is None:
            _restore_to_sql(self.archive, piece, out, read_size)
            return
        key = restrict_key()
        if features <= self.verified:
            chunker = _Chunker(out, read_size)
            self.archive.write_sql(piece, chunker.write, restrict_key=key, read_size=read_size)
            chunker.flush()
            return
        ours, theirs = hashlib.sha256(), hashlib.sha256()
        self.archive.write_sql(piece, ours.update, restrict_key=key, read_size=read_size)

        def tee(chunk: bytes) -> None:
            theirs.update(chunk)
            out(chunk)

        _restore_to_sql(self.archive, piece, tee, read_size, key=key)
        if ours.digest() == theirs.digest():
            self.verified |= features
        else:
            self.trusted = False
            logger.warning("the SQL written from the batch archive differs from pg_restore's for %s; the rest of "
                           "this batch goes through pg_restore", piece.schema)


@functools.cache
def _pg_restore_has_restrict_key(pg_restore: str) -> bool:
    """Whether this pg_restore writes \\restrict lines and takes --restrict-key (15.14 and later minors)."""
    try:
        out = subprocess.run([pg_restore, "--help"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "--restrict-key" in out


class _Chunker:
    """Collects the archive's many small writes into chunks of `size` for the sink."""

    def __init__(self, out: Callable[[bytes], None], size: int) -> None:
        self.out, self.size, self.buf = out, size, bytearray()

    def write(self, data: bytes) -> None:
        if len(data) >= self.size and not self.buf:
            self.out(data)
            return
        self.buf += data
        if len(self.buf) >= self.size:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self.out(bytes(self.buf))
            self.buf.clear()


def _write_member(record: BackupRecord, storage: Storage, archive: BatchArchive, piece: MemberPart,
                  sql: _SqlWriter):
    """Stream the member's artifact into its own object: the custom archive (dump) or pg_restore's SQL (sql)."""
    read_size = backups_settings.BACKUPS_READ_SIZE
    with artifact_writer(record, storage) as artifact:
        if record.format == BackupRecord.Format.DUMP:
            chunker = _Chunker(artifact.write, read_size)
            archive.write_custom(piece, chunker.write, read_size=read_size)
            chunker.flush()
        else:
            sql.write(piece, artifact.write, read_size)
    return artifact.result


def _restore_to_sql(archive: BatchArchive, piece: MemberPart, out: Callable[[bytes], None], read_size: int, *,
                    key: str | None = None) -> None:
    """The member's archive through `pg_restore -f -`: the plain SQL `pg_dump -n` would have written (with the
    restrict key `key`, else pg_restore's own random one)."""
    bins = pgtools.binaries()
    cmd = [bins.pg_restore, "--no-owner", "--no-acl", "--file=-"]
    if key is not None:
        cmd.append(f"--restrict-key={key}")

    def feed(write: Callable[[bytes], object]) -> None:
        chunker = _Chunker(write, read_size)
        archive.write_custom(piece, chunker.write, read_size=read_size)
        chunker.flush()

    with piped(cmd, feed=feed, env=pgtools.tool_env()) as child:
        for chunk in child.chunks(read_size):
            out(chunk)
        rc = child.wait()
    if rc != 0:
        raise DumpFailed(f"pg_restore of the member's share of the batch exited with status {rc}: {child.message}")
