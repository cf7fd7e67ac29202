"""`manage.py run_demo`: start a worker, back up every demo clinic through Celery, print the results."""

import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django_tenants.utils import get_public_schema_name, get_tenant_model

from backups.models import BackupRecord
from backups.services.records import backup_record_create
from project.celery import app
from project.processes import start_worker, stop_process, wait_for_worker
from tasks.backups import run_backup


class Command(BaseCommand):
    help = "Start a Celery worker, enqueue one backup per clinic, wait for them and print a table."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--timeout", type=float, default=300.0)

    def handle(self, *args, timeout: float, **options) -> None:
        tenants = list(get_tenant_model().objects.exclude(schema_name=get_public_schema_name()).order_by("schema_name"))
        if not tenants:
            raise CommandError("No clinics: run `manage.py create_demo_clinics` first.")
        worker = start_worker(name="demo", log_file=Path(settings.BASE_DIR) / "var" / "demo-worker.log")
        try:
            wait_for_worker(app, worker, name="demo")
            self.stdout.write(f"worker ready; enqueuing {len(tenants)} backups through Celery")
            with transaction.atomic():
                records = [backup_record_create(schema_name=t.schema_name, tenant=t,
                                                requested_by={"command": "run_demo"}) for t in tenants]
                for record in records:
                    transaction.on_commit(lambda pk=record.pk: run_backup.delay(pk))
            records = self._wait(records, timeout)
        finally:
            stop_process(worker)
        self._print(records)
        if any(r.status != BackupRecord.Status.SUCCEEDED for r in records):
            raise CommandError("Some backups failed; see the error column and var/demo-worker.log.")

    def _wait(self, records: list[BackupRecord], timeout: float) -> list[BackupRecord]:
        ids = [r.pk for r in records]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = list(BackupRecord.objects.filter(pk__in=ids).order_by("schema_name"))
            if all(r.status in (BackupRecord.Status.SUCCEEDED, BackupRecord.Status.FAILED) for r in current):
                return current
            time.sleep(0.2)
        raise CommandError(f"Backups did not finish within {timeout:.0f} s; see var/demo-worker.log.")

    def _print(self, records: list[BackupRecord]) -> None:
        header = f"{'tenant':18} {'file':52} {'size':>10} {'sha256':16} {'duration':>8}  status"
        self.stdout.write(header)
        self.stdout.write("-" * len(header))
        for r in records:
            duration = f"{r.duration_seconds:.2f}s" if r.duration_seconds is not None else "-"
            size = f"{r.size / 1e6:.2f} MB" if r.size else "-"
            self.stdout.write(f"{r.schema_name:18} {r.file_name:52} {size:>10} {r.sha256[:16]:16} {duration:>8}  "
                              f"{r.status}{': ' + r.error if r.error else ''}")
        self.stdout.write(f"files under {settings.BACKUPS_LOCAL_ROOT}")
