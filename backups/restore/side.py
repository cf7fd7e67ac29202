"""A backup loaded beside its tenant, in the same database: the machinery of side copies, clones and objects
restores, and the side copies operators keep for a few days.

pg_dump's script names its schema in every statement (`CREATE TABLE clinica_demo.x`), so a `sql` or `dump`
backup can only be loaded under the name it was taken from. Inside one transaction on Django's connection the
schema that holds that name now (the live tenant) is renamed aside, the verified script is loaded, the loaded
schema is renamed to the side name and the live one gets its name back. Other sessions never see any of it:
catalog changes are visible only once committed, and by then the live schema has its own name again (renaming
a schema locks none of its tables, so the tenant keeps working meanwhile). A process that dies mid-load leaves
nothing: its connection closes and the server rolls the transaction back. A `json` backup is loaded straight
into a new schema of the side name, migrated to the manifest's migration state.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, get_tenant_model

from backups.catalog.records import backup_event_create
from backups.catalog.selectors import schema_exists
from backups.catalog.sources import open_backup_or_copy
from backups.conf import backups_settings
from backups.core.errors import BackupError, RestoreFailed
from backups.models import BackupEvent, BackupRecord, SideCopy
from backups.postgres import pgtools
from backups.postgres.pg_depends import dependents_outside
from backups.restore.run import (
    aside_name,
    checked_record,
    load_json_into,
    load_verified_script,
    manifest_counts,
    mark_if_damaged,
    require_counts,
    table_counts,
)
from backups.storage.reading import VerifiedBackup

logger = logging.getLogger(__name__)

SCHEMA_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
RESERVED_PREFIXES = ("pg_", "information_schema")


def _q(name: str) -> str:
    return pgtools.quote_ident(name)


def side_name_refusal(name: str) -> str | None:
    """Why `name` cannot be a new schema beside the tenants (None when it can): it must be a safe schema name
    (lowercase letters, digits, underscores, starting with a letter, at most 63 characters), no schema may hold
    it yet, and no tenant may own it (a tenant whose schema is missing still owns its name)."""
    if not isinstance(name, str) or not SCHEMA_NAME.fullmatch(name):
        return (f"{name!r} is not a usable schema name: use lowercase letters, digits and underscores, starting "
                "with a letter, at most 63 characters.")
    if name.startswith(RESERVED_PREFIXES) or name == get_public_schema_name():
        return f"{name!r} is a name PostgreSQL or django-tenants keeps for itself."
    if get_tenant_model().objects.filter(schema_name=name).exists():
        return f"{name!r} is a tenant's schema name; a side copy or a clone needs a name of its own."
    if schema_exists(name):
        return f"A schema named {name!r} already exists; choose another name (nothing was changed)."
    return None


def require_side_name(name: str) -> None:
    """Raise RestoreFailed with side_name_refusal's reason."""
    refusal = side_name_refusal(name)
    if refusal:
        raise RestoreFailed(refusal)


def load_beside(*, record: BackupRecord, backup: VerifiedBackup, into: str) -> dict[str, int | None]:
    """Load the verified backup as the new schema `into`, inside the caller's transaction on Django's connection,
    and check every table's row count against the manifest (raising, so the caller's transaction rolls back).

    The schema the backup was taken from (`record.schema_name`) keeps its name and its content."""
    counts = manifest_counts(record)
    if record.format == BackupRecord.Format.JSON:
        found = load_json_into(into, record, backup, counts)
    else:
        found = _load_script_beside(record, backup, into, counts)
    require_counts(counts, found)
    return found


def _load_script_beside(record: BackupRecord, backup: VerifiedBackup, into: str,
                        counts: dict[str, int]) -> dict[str, int | None]:
    source = record.schema_name
    aside = aside_name(source) if schema_exists(source) else None
    connection.ensure_connection()
    raw = connection.connection
    try:
        with connection.cursor() as cur:
            if aside:
                cur.execute(f"ALTER SCHEMA {_q(source)} RENAME TO {_q(aside)}")
        try:
            load_verified_script(raw, record, backup)
        finally:
            connection.search_path_set_schemas = None  # the script set search_path itself: django-tenants sets it again
        found = table_counts(raw, source, list(counts))
        with connection.cursor() as cur:
            cur.execute(f"ALTER SCHEMA {_q(source)} RENAME TO {_q(into)}")
            if aside:
                cur.execute(f"ALTER SCHEMA {_q(aside)} RENAME TO {_q(source)}")
    except (DatabaseError, psycopg.Error) as exc:
        raise RestoreFailed(f"The server refused to load the backup beside {source}: {exc}".strip()) from None
    return found


def fresh_session() -> None:
    """Close Django's connection after a load outside any transaction: pg_dump's script changed session settings
    (search_path, check_function_bodies, row_security ...) that must not reach the process's next query."""
    if not connection.in_atomic_block:
        connection.close()


# --- side copies ------------------------------------------------------------------------------------------------

@dataclass
class SideCopyReport:
    """What a side copy restored."""

    record_id: int
    schema: str
    into: str
    ok: bool = False
    row_counts: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    expires_at: datetime | None = None
    side_copy_id: int | None = None
    message: str = ""


def restore_side_copy(*, schema: str, record: BackupRecord, into: str, actor: dict | None = None) -> SideCopyReport:
    """Restore the tenant's backup into the new schema `into` of the same database (not a tenant, never routed)
    for operators to query and compare; the live tenant is untouched. Listed as a SideCopy (with its origin) and
    dropped by housekeeping after BACKUPS_SIDE_COPY_KEEP_DAYS. Refuses a name in use or a tenant's name, and
    another tenant's, damaged or unfinished backup, before anything changes."""
    checked_record(schema, record)
    require_side_name(into)
    counts = manifest_counts(record)
    report = SideCopyReport(record.pk, schema, into)
    try:
        with open_backup_or_copy(record) as (backup, _source):
            with transaction.atomic():
                found = load_beside(record=record, backup=backup, into=into)
                now = timezone.now()
                side = SideCopy.objects.create(
                    schema_name=into, origin_schema=schema, tenant_uid=record.tenant_uid, record=record,
                    record_file_name=record.file_name, backup_taken_at=record.finished_at or record.created_at,
                    requested_by=actor or {},
                    expires_at=now + timedelta(days=backups_settings.BACKUPS_SIDE_COPY_KEEP_DAYS))
    except BackupError as exc:
        mark_if_damaged(record, exc)
        backup_event_create(record=record, action=BackupEvent.Action.SIDE_COPY, actor=actor,
                            details={"ok": False, "into": into, "error": str(exc)[:500]})
        raise
    finally:
        fresh_session()
    report.ok = True
    report.row_counts = {t: (n, found.get(t)) for t, n in counts.items()}
    report.expires_at, report.side_copy_id = side.expires_at, side.pk
    report.message = (f"Backup {record.pk} of {schema} restored into schema {into}; dropped after "
                      f"{side.expires_at:%Y-%m-%d %H:%M} UTC.")
    backup_event_create(record=record, action=BackupEvent.Action.SIDE_COPY, actor=actor,
                        details={"ok": True, "into": into, "side_copy_id": side.pk,
                                 "expires_at": side.expires_at.isoformat()})
    return report


def side_copy_drop(*, side: SideCopy, actor: dict | None = None) -> bool:
    """Drop a side copy's schema and mark it dropped; False when it was dropped already.

    Never drops a schema a tenant owns now (a tenant created on that name later) or one that objects elsewhere
    depend on (DROP SCHEMA ... CASCADE would drop them silently): those raise RestoreFailed and stay listed.
    """
    with transaction.atomic():
        locked = SideCopy.objects.select_for_update().filter(pk=side.pk, dropped_at__isnull=True).first()
        if locked is None:
            return False
        if get_tenant_model().objects.filter(schema_name=locked.schema_name).exists():
            raise RestoreFailed(f"Schema {locked.schema_name} now belongs to a tenant; the side copy's listing "
                                "is kept and the schema is not dropped.")
        if schema_exists(locked.schema_name):
            connection.ensure_connection()
            outside = dependents_outside(connection.connection, locked.schema_name)
            if outside:
                raise RestoreFailed(f"Objects outside side copy {locked.schema_name} depend on it: "
                                    f"{'; '.join(outside[:10])}. Remove them first; nothing was dropped.")
            with connection.cursor() as cur:
                cur.execute(f"DROP SCHEMA {_q(locked.schema_name)} CASCADE")
        locked.dropped_at = timezone.now()
        locked.save(update_fields=["dropped_at"])
    logger.info("side copy %s (of %s) dropped%s", side.schema_name, side.origin_schema,
                f" by {actor}" if actor else "")
    side.dropped_at = locked.dropped_at
    return True


def side_copies_expire(*, now: datetime | None = None) -> list[str]:
    """Housekeeping: drop every side copy whose time is up; returns the schemas dropped (one that cannot be
    dropped is logged and tried again next time)."""
    dropped = []
    for side in SideCopy.objects.expired(now or timezone.now()).order_by("expires_at"):
        try:
            if side_copy_drop(side=side, actor={"housekeeping": True}):
                dropped.append(side.schema_name)
        except (BackupError, DatabaseError) as exc:
            logger.warning("side copy %s was not dropped: %s", side.schema_name, exc)
    return dropped
