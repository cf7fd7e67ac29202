"""Configuration checked at start-up, so a wrong setting stops a worker with one sentence, not a failed backup."""

from __future__ import annotations

import logging

from backups import conf
from backups.conf import backups_settings
from backups.postgres import pgtools
from backups.storage import StorageError, get_copy_storage, get_storage

logger = logging.getLogger(__name__)


def check_configuration() -> None:
    """Raise BackupConfigError or StorageError naming the setting that is wrong."""
    from backups.backup.batch.run import batch_check
    from backups.core.encryption import load_identities

    get_storage().check()
    check_copy_target()
    conf.age_recipients()
    if backups_settings.BACKUPS_AGE_IDENTITY_FILE:
        load_identities(backups_settings.BACKUPS_AGE_IDENTITY_FILE)
    pgtools.check_pg_dump_options()
    batch_check()


def check_copy_target() -> None:
    """The second target's settings (StorageError naming the BACKUPS_COPY_* setting when they are wrong, or when
    a lock mode meets a bucket without Object Lock); a target that is only unreachable or refusing now is logged,
    never stopping the worker: the primary backups go on, and their copies are retried."""
    target = get_copy_storage()
    if target is None:
        return
    if getattr(target, "object_lock_mode", ""):
        target.check_object_lock()
    try:
        target.check()
    except StorageError as exc:
        logger.warning("the second target (BACKUPS_COPY_STORAGE=%s) cannot be written now: %s; backups go on, "
                       "their copies are retried", backups_settings.BACKUPS_COPY_STORAGE, exc)
