"""`manage.py run_scheduled_backups`: one pass over every due tenant, in this process (cron instead of beat)."""

from backups.management.base import OpsCommand
from backups.models import BackupRecord
from backups.schedule.cron_pass import cron_backup_pass
from backups.storage import get_storage


class Command(OpsCommand):
    help = "Back up every tenant that is due now, in this process (for cron instead of Celery beat)."

    def handle(self, *args, **options) -> None:
        self.stdout.write("Checking for scheduled backups...")
        get_storage().check()
        found = cron_backup_pass(say=self.stdout.write)
        ids = [new.pk for new in found.created]
        records = BackupRecord.objects.filter(pk__in=ids)
        for record in records.order_by("schema_name").iterator(chunk_size=2000):
            label = found.labels.get(record.pk, record.schema_name)
            if record.status == BackupRecord.Status.SUCCEEDED:
                self.stdout.write(f"  {label}: Uploaded {record.storage_key} ({record.size / 1e6:.2f} MB)")
            elif record.status == BackupRecord.Status.FAILED:
                self.stdout.write(self.style.ERROR(f"  {label}: Failed: {record.error}"))
            else:
                error = found.errors.get(record.pk) or record.error
                self.stdout.write(self.style.ERROR(f"  {label}: left queued for the next run: {error}"))
        for schema in found.skipped_unmigrated:
            self.stdout.write(f"Skipped {schema}: its schema is not migrated yet.")
        for schema, error in found.broken.items():
            self.stdout.write(self.style.ERROR(f"Skipped {schema}: its schedule cannot be used ({error})."))
        done = records.filter(status=BackupRecord.Status.SUCCEEDED).count()
        self.stdout.write(f"{done} of {len(ids)} scheduled backups done.")
        self.stdout.write("Finished.")
