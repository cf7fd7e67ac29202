"""`manage.py backup_tenant <schema>`: one backup, synchronously, through the same pipeline as the workers (a batch
of one: dump, artifact, record, after-success)."""

from django.core.management.base import CommandError
from django_tenants.utils import get_public_schema_name, get_tenant_model

from backups.backup.batch.run import batch_backup_run
from backups.backup.public import PUBLIC_FORMAT, public_backup_create, public_backup_run
from backups.catalog.records import backup_record_create, backup_record_mark_failed
from backups.catalog.selectors import schema_exists
from backups.conf import backups_settings
from backups.core.errors import BackupError, TransientBackupError
from backups.management.base import OpsCommand
from backups.management.progress import shown_progress
from backups.models import BackupRecord
from backups.ops.checks import check_configuration
from backups.storage import StorageError


class Command(OpsCommand):
    help = ("Back up one tenant's schema now (progress on stderr) and print the record id, file and size; "
            "the tenant's last backup time moves as when a worker makes it. `backup_tenant public` backs up the "
            "shared tables (tenants, domains, operators, beat's entries, the catalog) that recover_deployment "
            "starts from.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("schema", help="The tenant's schema name.")
        parser.add_argument("--format", choices=BackupRecord.Format.values, default=None)
        parser.add_argument("--compression", choices=BackupRecord.Compression.values, default=None)
        parser.add_argument("--no-progress", action="store_true", help="Print no progress while it runs.")

    def handle(self, *args, schema: str, format: str | None, compression: str | None, no_progress: bool,
               **options) -> None:
        public = schema == get_public_schema_name()
        tenant = None if public else get_tenant_model().objects.filter(schema_name=schema).first()
        if tenant is None and not public:
            raise CommandError(f"No tenant has the schema {schema!r}.")
        if public and format not in (None, PUBLIC_FORMAT):
            raise CommandError(f"The public schema is backed up in the {PUBLIC_FORMAT} format only.")
        if not schema_exists(schema):
            raise CommandError(f"Tenant {schema!r} has no schema in the database.")
        record = None
        try:
            check_configuration()
            if public:
                record = public_backup_create(backup_type=BackupRecord.Type.MANUAL,
                                              requested_by={"command": "backup_tenant"})
            else:
                record = backup_record_create(schema_name=schema, tenant=tenant, fmt=format, compression=compression,
                                              requested_by={"command": "backup_tenant"})
            if no_progress:
                retry = _run(record, public)
            else:
                with shown_progress(record.pk, self.stderr):
                    retry = _run(record, public)
        except (ValueError, StorageError, BackupError) as exc:
            raise CommandError(str(exc)) from None
        record.refresh_from_db()
        if record.status in (BackupRecord.Status.QUEUED, BackupRecord.Status.RUNNING):
            # put back for a retry that no task will make: fail it, or it would block the tenant's API backups
            error = retry.get(record.pk) or record.error or "The backup did not finish."
            record = backup_record_mark_failed(record=record, error=error)
        if record.status != BackupRecord.Status.SUCCEEDED:
            raise CommandError(f"Backup {record.pk} of {schema} failed: {record.error}")
        self.stdout.write(f"record {record.pk}")
        self.stdout.write(f"file   {record.storage_key}")
        self.stdout.write(f"size   {record.size} bytes ({record.plain_size} bytes before compression)")
        self.stdout.write(f"sha256 {record.sha256}")
        copy = record.copies.filter(backend=backups_settings.BACKUPS_COPY_STORAGE).first() \
            if backups_settings.BACKUPS_COPY_STORAGE else None
        if copy is not None:  # made before the pipeline returned (backups.backup.after_success)
            self.stdout.write(f"copy   {copy.backend}: {copy.status}" + (f" ({copy.error})" if copy.error else ""))


def _run(record: BackupRecord, public: bool) -> dict[int, str]:
    """Run the record through the pipeline (a batch of one; the public schema's with its own retention); why it
    must be tried again, if it must (no task retries a command's record: the caller fails it)."""
    if public:
        try:
            public_backup_run(record=record)
        except TransientBackupError as exc:
            return {record.pk: str(exc)}
        return {}
    return batch_backup_run(record_ids=[record.pk]).errors
