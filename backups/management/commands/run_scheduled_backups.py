"""`manage.py run_scheduled_backups`: one dispatch, run synchronously, for deployments driven by cron."""

from typing import Any

from django_tenants.utils import get_tenant_model

from backups import conf
from backups.management.base import OpsCommand
from backups.models import BackupRecord
from backups.services.backup_run import backup_run
from backups.services.batch_backup import batch_backup_run, batching_enabled
from backups.services.dispatch import dispatch_due_backups
from backups.services.finalize import backup_record_finalize, retention_apply
from backups.storage import get_storage


class Command(OpsCommand):
    help = "Back up every tenant that is due now, in this process (for cron instead of Celery beat)."

    def handle(self, *args, **options) -> None:
        self.stdout.write("Checking for scheduled backups...")
        get_storage().check()
        dispatch = dispatch_due_backups(enqueue=False)
        ids = [new.pk for new in dispatch.created]
        self.labels = tenant_labels(dispatch.created)
        if batching_enabled() and len(ids) > 1:
            self._batched(ids)
        else:
            for record in dispatch.created:
                self._alone(record.pk, self.labels.get(record.pk, record.schema_name))
        records = BackupRecord.objects.filter(pk__in=ids)
        for record in records.order_by("schema_name"):
            if record.status == BackupRecord.Status.SUCCEEDED:
                self.stdout.write(f"  {self.labels.get(record.pk, record.schema_name)}: Uploaded {record.storage_key} "
                                  f"({record.size / 1e6:.2f} MB)")
            else:
                self.stdout.write(self.style.ERROR(f"  {self.labels.get(record.pk, record.schema_name)}: Failed: "
                                                   f"{record.error}"))
        for schema in dispatch.skipped_unmigrated:
            self.stdout.write(f"Skipped {schema}: its schema is not migrated yet.")
        for schema, error in dispatch.broken.items():
            self.stdout.write(self.style.ERROR(f"Skipped {schema}: its schedule cannot be used ({error})."))
        done = records.filter(status=BackupRecord.Status.SUCCEEDED).count()
        self.stdout.write(f"{done} of {len(ids)} scheduled backups done.")
        self.stdout.write("Finished.")

    def _batched(self, ids: list[int]) -> None:
        """Batches of BACKUPS_BATCH_SIZE (one pg_dump each); members to retry run once more, alone."""
        size = int(conf.get("BACKUPS_BATCH_SIZE"))
        for start in range(0, len(ids), size):
            part = ids[start:start + size]
            self.stdout.write(f"Backing up {len(part)} tenants from one dump...")
            result = batch_backup_run(record_ids=part)
            for record_id in result.retry:
                self._alone(record_id, self.labels.get(record_id, ""))

    def _alone(self, record_id: int, schema: str) -> None:
        if schema:
            self.stdout.write(f"Starting backup for {schema}...")
        try:
            result = backup_run(record_id=record_id)
        except Exception as exc:  # noqa: BLE001 - a transient error leaves it queued for the next run
            self.stdout.write(self.style.ERROR(f"  {schema or record_id}: {exc}"))
            return
        if result is not None and result.status == BackupRecord.Status.SUCCEEDED:
            backup_record_finalize(record_id=result.pk)
            if result.tenant_id:
                retention_apply(tenant_id=result.tenant_id)


def tenant_label(tenant: Any, schema: str) -> str:
    """How the tenant is named to a person: its name and its schema (`Clínica Sonrisa (clinica_sonrisa)`)."""
    name = str(tenant) if tenant is not None else ""
    if not name or name == schema:
        return schema
    return name if f"({schema})" in name else f"{name} ({schema})"


def tenant_labels(records: list) -> dict[int, str]:
    """Each record's tenant label, by record id (one query for all of them)."""
    tenants = get_tenant_model().objects.in_bulk([r.tenant_id for r in records if r.tenant_id])
    return {r.pk: tenant_label(tenants.get(r.tenant_id), r.schema_name) for r in records}
