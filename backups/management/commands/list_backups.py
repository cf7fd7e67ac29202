"""`manage.py list_backups <schema>`: a tenant's backups, newest first, as operators need them for a restore."""

from django.core.management.base import CommandError
from django.utils import timezone
from django_tenants.utils import get_tenant_model

from backups.catalog.finalize import retention_waiting
from backups.management.base import OpsCommand
from backups.models import BackupRecord


def _size(n: int | None) -> str:
    if not n:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


class Command(OpsCommand):
    help = ("List a tenant's backups, newest first: id, when, type, status, format, size and file. "
            "--all includes those of deleted tenants that had the same schema name.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("schema")
        parser.add_argument("--limit", type=int, default=30, help="How many (default 30; 0 for all).")
        parser.add_argument("--status", choices=BackupRecord.Status.values, default=None)
        parser.add_argument("--all", action="store_true", dest="all_identities",
                            help="Also the backups of earlier (deleted) tenants with this schema name.")

    def handle(self, *args, schema: str, limit: int, status: str | None, all_identities: bool, **options) -> None:
        tenant = get_tenant_model().objects.filter(schema_name=schema).first()
        records = BackupRecord.objects.filter(schema_name=schema)
        if not all_identities:
            if tenant is None:
                raise CommandError(f"No tenant has the schema {schema!r} (--all lists deleted tenants' backups).")
            records = records.filter(tenant_uid=tenant.tenant_uid)
        if status:
            records = records.filter(status=status)
        records = records.order_by("-created_at", "-pk")
        if limit:
            records = records[:limit]
        rows = list(records)
        if not rows:
            self.stdout.write(f"No backups of {schema}.")
            return
        waiting = {w.record_id for w in retention_waiting(tenant_id=tenant.pk)} if tenant is not None else set()
        now = timezone.now()
        self.stdout.write(f"{'id':>8}  {'created':16}  {'type':9}  {'status':9}  {'format':6}  {'size':>9}  file")
        for r in rows:
            owner = "" if tenant is not None and r.tenant_uid == tenant.tenant_uid else "  (deleted tenant)"
            damaged = "  DAMAGED" if r.damaged_at else ""
            held = r.locked_until is not None and r.locked_until > now
            locked = f"  locked until {r.locked_until:%Y-%m-%d %H:%M}" if held else ""
            if r.pk in waiting:  # retention would delete it, the lock keeps it
                locked += " (retention waits for it)"
            self.stdout.write(f"{r.pk:>8}  {r.created_at:%Y-%m-%d %H:%M}  {r.backup_type:9}  {r.status:9}  "
                              f"{r.format:6}  {_size(r.size):>9}  {r.file_name}{damaged}{locked}{owner}")
