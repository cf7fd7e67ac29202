"""The backups app's settings, with defaults, so a host project sets only what it changes."""

from pathlib import Path
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    "BACKUPS_STORAGE": "local",
    "BACKUPS_LOCAL_ROOT": "var/backups",
    "BACKUPS_DEFAULT_FORMAT": "sql",
    "BACKUPS_COMPRESSION": "zstd",
    "BACKUPS_ZSTD_LEVEL": 3,
    "BACKUPS_ZSTD_THREADS": 1,
    "BACKUPS_GZIP_LEVEL": 6,
    "BACKUPS_PG_BIN_DIR": "",
    "BACKUPS_READ_SIZE": 1 << 20,
    "BACKUPS_PIPE_SIZE": 1 << 20,
    "BACKUPS_PROGRESS_EVERY_BYTES": 64 << 20,
    "BACKUPS_DUMP_SOFT_TIME_LIMIT": 3 * 3600,
    "BACKUPS_DUMP_TIME_LIMIT": 3 * 3600 + 600,
    "BACKUPS_TASK_MAX_RETRIES": 3,
    "BACKUPS_TASK_RETRY_DELAY": 60,
    "BACKUPS_TASK_RETRY_MAX_DELAY": 900,
    "BACKUPS_TRANSIENT_RETRY_WINDOW_SECONDS": 2 * 3600,
    "BACKUPS_JSON_EXCLUDE": ("contenttypes.contenttype", "auth.permission"),
    "BACKUPS_SPOOL_DIR": "",
    "BACKUPS_DELETED_TENANT_KEEP_DAYS": 90,
    "BACKUPS_MANIFEST_KEY": "",
    "BACKUPS_MANIFEST_OLD_KEYS": (),
    "BACKUPS_AGE_RECIPIENTS": "",
    "BACKUPS_AGE_IDENTITY_FILE": "",
    "BACKUPS_TICK_SECONDS": 300,
    "BACKUPS_REAPER_SECONDS": 600,
    "BACKUPS_SPREAD_SECONDS": 1800,
    "BACKUPS_DISPATCH_BATCH": 5000,
    "BACKUPS_FANOUT_BATCH": 100,
    "BACKUPS_MAX_CONCURRENT_DUMPS": 4,
    "BACKUPS_DUMP_SLOT_WAIT_SECONDS": 600,
    "BACKUPS_LOCK_DATABASE_URL": "",
    "BACKUPS_TENANT_LOCK_WAIT_SECONDS": 600,
    "BACKUPS_MANUAL_RETENTION_DAYS": None,
    "BACKUPS_QUEUED_TIMEOUT_SECONDS": 6 * 3600,
    "BACKUPS_RUNNING_GRACE_SECONDS": 600,
    "BACKUPS_ORPHAN_GRACE_SECONDS": 120,
    "BACKUPS_LOST_MESSAGE_SECONDS": 300,
    "BACKUPS_OVERDUE_GRACE_SECONDS": 4 * 3600,
    "BACKUPS_OVERDUE_CHECK_SECONDS": 900,
    "BACKUPS_DRILL_SECONDS": 86400,
    "BACKUPS_DRILL_SAMPLE": 3,
    "BACKUPS_RECONCILE_SECONDS": 86400,
}


def get(name: str) -> Any:
    """A BACKUPS_* setting, falling back to the app's default."""
    return getattr(settings, name, DEFAULTS[name])


def age_recipients() -> list[str]:
    """The age public keys backups are encrypted to (empty: no client-side encryption)."""
    from .encryption import parse_recipients

    return parse_recipients(get("BACKUPS_AGE_RECIPIENTS") or "")


def default_encryption() -> str:
    """'age' when recipients are configured, else ''."""
    return "age" if age_recipients() else ""


def local_root() -> Path:
    """The local-folder storage root, absolute."""
    root = Path(get("BACKUPS_LOCAL_ROOT"))
    return root if root.is_absolute() else Path(settings.BASE_DIR) / root
