"""The public schema's backups: the shared apps' tables (tenants, domains, operators, beat's entries, the backups
catalog itself), the part of a deployment no tenant backup holds and recover_deployment starts from.

They go through the same pipeline as a tenant's (pg_dump, compression, age encryption when recipients are set, a
signed manifest beside the object): the public schema holds password hashes and tokens. They are stored and
catalogued under a fixed identity (backups.core.naming.PUBLIC_UID) that no tenant has, so no tenant's API lookup
ever finds them, and a restore of one tenant refuses them; only recover_deployment restores them. The format is
always `dump` (custom archive): recovery leaves out the archive's `CREATE SCHEMA public` with pg_restore's list.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django_tenants.utils import get_public_schema_name

from backups.backup.run import backup_run
from backups.catalog.finalize import public_retention_apply
from backups.catalog.records import backup_record_create
from backups.conf import backups_settings
from backups.core.naming import PUBLIC_UID
from backups.models import BackupRecord
from backups.postgres.locks import TENANT_NAMESPACE, lock_key

logger = logging.getLogger(__name__)
PUBLIC_FORMAT = BackupRecord.Format.DUMP
# a tick a little early (beat's interval is measured from the last run, a backup takes a while) still counts
EARLY_TICK_SHARE = 0.1


def public_records() -> QuerySet[BackupRecord]:
    """The public schema's backups, newest first."""
    return BackupRecord.objects.filter(tenant_uid=PUBLIC_UID).order_by("-created_at", "-id")


def public_backup_create(*, backup_type: str = BackupRecord.Type.AUTOMATIC,
                         requested_by: dict | None = None) -> BackupRecord:
    """A queued backup record of the public schema (format `dump`)."""
    return backup_record_create(schema_name=get_public_schema_name(), fmt=PUBLIC_FORMAT, backup_type=backup_type,
                                requested_by=requested_by or {})


def public_backup_run(*, record: BackupRecord) -> BackupRecord:
    """Run the record in this process, then apply the public schema's retention when it succeeded (a retention
    failure is logged: the backup stands, and the next one's retention tries again)."""
    record = backup_run(record_id=record.pk) or record
    if record.status == BackupRecord.Status.SUCCEEDED:
        try:
            public_retention_apply()
        except Exception:  # noqa: BLE001 - the backup stands; retention runs after the next one
            logger.exception("retention of the public schema's backups failed after backup %s", record.pk)
    return record


def public_backup_due(*, now: datetime | None = None) -> bool:
    """Whether beat's tick should back up the public schema: none is queued or running, and none succeeded within
    BACKUPS_PUBLIC_BACKUP_SECONDS (less a tenth, so a tick that comes a little early still runs)."""
    every = float(backups_settings.BACKUPS_PUBLIC_BACKUP_SECONDS)
    if every <= 0:
        return False
    records = public_records()
    if records.active().exists():
        return False
    since = (now or timezone.now()) - timedelta(seconds=every * (1 - EARLY_TICK_SHARE))
    return not records.filter(status=BackupRecord.Status.SUCCEEDED, created_at__gt=since).exists()


def public_backup_if_due(*, now: datetime | None = None) -> BackupRecord | None:
    """Beat's entry: back up the public schema when it is due (two ticks at once make one backup); the record,
    or None when it was not due."""
    with transaction.atomic():
        with connection.cursor() as cur:  # one tick at a time decides, until its record is committed
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [lock_key(TENANT_NAMESPACE, "public-schedule")])
        if not public_backup_due(now=now):
            return None
        record = public_backup_create(requested_by={"scheduler": True})
    return public_backup_run(record=record)
