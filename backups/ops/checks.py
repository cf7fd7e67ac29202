"""Configuration checked at start-up, so a wrong setting stops a worker with one sentence, not a failed backup."""

from __future__ import annotations

from backups import conf
from backups.conf import backups_settings
from backups.postgres import pgtools
from backups.storage import get_storage


def check_configuration() -> None:
    """Raise BackupConfigError or StorageError naming the setting that is wrong."""
    from backups.backup.batch.run import batch_check
    from backups.core.encryption import load_identities

    get_storage().check()
    conf.age_recipients()
    if backups_settings.BACKUPS_AGE_IDENTITY_FILE:
        load_identities(backups_settings.BACKUPS_AGE_IDENTITY_FILE)
    pgtools.check_pg_dump_options()
    batch_check()
