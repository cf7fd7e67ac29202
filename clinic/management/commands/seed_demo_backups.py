"""`manage.py seed_demo_backups`: backup history for demos and front-end work, made by the real pipeline."""

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, get_tenant_model

from backups.backup.run import backup_run
from backups.catalog.finalize import backup_record_finalize
from backups.catalog.records import backup_record_create
from backups.models import BackupRecord

# (days ago, hour, type, format): five backups over the last six days
PLAN = ((6, 3, "automatic", "sql"), (5, 11, "manual", "dump"), (3, 3, "automatic", "sql"),
        (1, 16, "manual", "json"), (0, 3, "automatic", "sql"))


class Command(BaseCommand):
    help = "Give each clinic five real backups dated over the last six days (manual and automatic)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("schemas", nargs="*", help="Clinics to seed (default: all).")

    def handle(self, *args, schemas: list[str], **options) -> None:
        tenants = get_tenant_model().objects.exclude(schema_name=get_public_schema_name())
        if schemas:
            tenants = tenants.filter(schema_name__in=schemas)
        today = timezone.now().replace(minute=0, second=0, microsecond=0)
        for tenant in tenants.order_by("schema_name"):
            for days, hour, kind, fmt in PLAN:
                at = (today - timedelta(days=days)).replace(hour=hour)
                record = backup_record_create(
                    schema_name=tenant.schema_name, tenant=tenant, fmt=fmt, backup_type=kind, at=at,
                    slot=at if kind == BackupRecord.Type.AUTOMATIC else None,
                    requested_by={} if kind == "automatic" else {"id": 1, "email": f"admin@{tenant.schema_name}",
                                                                   "nombre": "Dra. Núñez"},
                )
                record = backup_run(record_id=record.pk)
                if record.status != BackupRecord.Status.SUCCEEDED:
                    raise CommandError(f"{tenant.schema_name}: {record.error}")
                took = record.finished_at - record.started_at
                BackupRecord.objects.filter(pk=record.pk).update(created_at=at, started_at=at, finished_at=at + took)
                backup_record_finalize(record_id=record.pk)
                self.stdout.write(f"{tenant.schema_name}: {record.file_name}")
