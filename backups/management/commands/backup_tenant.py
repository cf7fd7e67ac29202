"""`manage.py backup_tenant <schema>`: one backup, synchronously, through the same services as the workers."""

from django.core.management.base import CommandError
from django_tenants.utils import get_public_schema_name, get_tenant_model

from backups.backup.public import PUBLIC_FORMAT, public_backup_create, public_backup_run
from backups.backup.run import backup_run
from backups.catalog.finalize import backup_record_finalize
from backups.catalog.records import backup_record_create, backup_record_mark_failed
from backups.catalog.selectors import schema_exists
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
            run = (lambda: public_backup_run(record=record)) if public else (lambda: backup_run(record_id=record.pk))
            if no_progress:
                record = run()
            else:
                with shown_progress(record.pk, self.stderr):
                    record = run()
        except (ValueError, StorageError, BackupError, TransientBackupError) as exc:
            if record is not None and isinstance(exc, TransientBackupError):
                # No task retries a command's record: fail it, or it would sit queued until the reaper sends it.
                backup_record_mark_failed(record=record, error=str(exc))
            raise CommandError(str(exc)) from None
        if record.status in (BackupRecord.Status.QUEUED, BackupRecord.Status.RUNNING):
            # put back for a retry that no task will make: fail it, or it would block the tenant's API backups
            record = backup_record_mark_failed(record=record, error=record.error or "The backup did not finish.")
        if record.status != BackupRecord.Status.SUCCEEDED:
            raise CommandError(f"Backup {record.pk} of {schema} failed: {record.error}")
        backup_record_finalize(record_id=record.pk)  # what the chain's record step does for a worker's backup
        self.stdout.write(f"record {record.pk}")
        self.stdout.write(f"file   {record.storage_key}")
        self.stdout.write(f"size   {record.size} bytes ({record.plain_size} bytes before compression)")
        self.stdout.write(f"sha256 {record.sha256}")
