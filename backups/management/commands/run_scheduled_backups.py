"""`manage.py run_scheduled_backups`: one dispatch, run synchronously, for deployments driven by cron."""

from django.core.management.base import BaseCommand

from backups.models import BackupRecord
from backups.services.backup_run import backup_run
from backups.services.dispatch import dispatch_due_backups
from backups.services.finalize import backup_record_finalize, retention_apply
from backups.storage import get_storage


class Command(BaseCommand):
    help = "Back up every tenant that is due now, in this process (for cron instead of Celery beat)."

    def handle(self, *args, **options) -> None:
        self.stdout.write("Checking for scheduled backups...")
        get_storage().check()
        dispatch = dispatch_due_backups(enqueue=False)
        done = 0
        for record in dispatch.records:
            self.stdout.write(f"Starting backup for {record.schema_name}...")
            result = backup_run(record_id=record.pk)
            if result.status == BackupRecord.Status.SUCCEEDED:
                done += 1
                backup_record_finalize(record_id=result.pk)
                self.stdout.write(f"  Uploaded {result.storage_key} ({result.size / 1e6:.2f} MB)")
                if result.tenant_id:
                    retention_apply(tenant_id=result.tenant_id)
            else:
                self.stdout.write(self.style.ERROR(f"  Failed: {result.error}"))
        for schema in dispatch.skipped_unmigrated:
            self.stdout.write(f"Skipped {schema}: its schema is not migrated yet.")
        for schema, error in dispatch.broken.items():
            self.stdout.write(self.style.ERROR(f"Skipped {schema}: its schedule cannot be used ({error})."))
        self.stdout.write(f"{done} of {len(dispatch.records)} scheduled backups done.")
        self.stdout.write("Finished.")
