"""Errors the backup services raise; tasks retry only the transient ones."""


class BackupError(Exception):
    """A backup or restore failed; the message is shown to users as is."""


class BackupConfigError(BackupError):
    """The deployment is misconfigured (a binary, a setting); retrying will not help."""


class SchemaNotFound(BackupError):
    """The tenant's schema does not exist in the database."""


class DumpFailed(BackupError):
    """pg_dump (or the JSON dumper) exited with an error."""


class TransientBackupError(BackupError):
    """A failure worth retrying later: storage or network hiccup, busy database."""


class RestoreFailed(BackupError):
    """A restore did not complete; the live schema was left as it was."""


class VerificationFailed(RestoreFailed):
    """Restored row counts or checksums differ from the manifest."""


class StoredObjectDamaged(VerificationFailed):
    """The stored object's size or SHA-256 differs from what the catalog recorded: damaged or tampered with."""
