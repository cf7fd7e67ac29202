"""`manage.py run_demo`: a worker and beat; one manual backup per clinic, then automatic ones on short schedules."""

import time
from datetime import timedelta
from io import StringIO
from pathlib import Path
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, get_tenant_model

from backups.backup.enqueue import backups_enqueue
from backups.catalog.records import backup_record_create
from backups.models import BackupRecord
from project.celery import app
from project.processes import start_beat, start_worker, stop_process, wait_for_worker


class Command(BaseCommand):
    help = "Start a worker and beat, back up every clinic through Celery, then show automatic backups happen."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--timeout", type=float, default=300.0)
        parser.add_argument("--tick", type=int, default=5, help="Dispatcher tick for the demo, in seconds.")

    def handle(self, *args, timeout: float, tick: int, **options) -> None:
        tenants = list(get_tenant_model().objects.exclude(schema_name=get_public_schema_name())
                       .order_by("schema_name"))
        if not tenants:
            raise CommandError("No clinics: run `manage.py create_demo_clinics` first.")
        var = Path(settings.BASE_DIR) / "var"
        settings.BACKUPS_TICK_SECONDS = tick
        settings.BACKUPS_SPREAD_SECONDS = 0  # the demo's three clinics need no spreading
        call_command("setup_backup_schedule", stdout=StringIO())
        worker = start_worker(name="demo", log_file=var / "demo-worker.log",
                              extra_env={"BACKUPS_SPREAD_SECONDS": "0"})
        beat = None
        try:
            wait_for_worker(app, worker, name="demo")
            self.stdout.write(f"worker ready; 1) one manual backup per clinic through Celery ({len(tenants)})")
            with transaction.atomic():
                manual = [backup_record_create(schema_name=t.schema_name, tenant=t,
                                               requested_by={"command": "run_demo"}) for t in tenants]
                backups_enqueue(manual)
            self._print(self._wait([r.pk for r in manual], timeout))

            self.stdout.write(f"\n2) automatic backups: beat ticks every {tick} s, clinics on short schedules")
            started = timezone.now()
            self._schedule(tenants)
            beat = start_beat(log_file=var / "demo-beat.log",
                              extra_env={"BACKUPS_TICK_SECONDS": str(tick), "BACKUPS_SPREAD_SECONDS": "0"})
            automatic = self._wait_automatic(tenants, started, timeout)
            self._print(automatic)
            for t in get_tenant_model().objects.filter(pk__in=[t.pk for t in tenants]).order_by("schema_name"):
                nxt = t.next_backup_at.isoformat(timespec="seconds") if t.next_backup_at else "-"
                self.stdout.write(f"{t.schema_name:18} schedule {t.backup_schedule:9} last "
                                  f"{t.last_backup_at:%H:%M:%S} next {nxt}")
        finally:
            if beat is not None:
                stop_process(beat)
            stop_process(worker)
            settings.BACKUPS_TICK_SECONDS = 300
            call_command("setup_backup_schedule", stdout=StringIO())
        self.stdout.write(f"files under {settings.BACKUPS_LOCAL_ROOT}; logs in var/demo-*.log")

    def _schedule(self, tenants) -> None:
        """One one-shot in a few seconds, one daily and one every-6h whose base time is a few seconds away."""
        now = timezone.now()
        kinds = ["scheduled", "daily", "every_6h"]
        for i, tenant in enumerate(tenants):
            at = now + timedelta(seconds=8 + 4 * i)
            tenant.backup_schedule = kinds[i % len(kinds)]
            tenant.backup_timezone = "Europe/Madrid"
            tenant.backup_time = at.astimezone(ZoneInfo("Europe/Madrid")).time().replace(microsecond=0)
            tenant.next_scheduled_backup = at
            tenant.full_clean()
            tenant.save()
            self.stdout.write(f"  {tenant.schema_name}: {tenant.backup_schedule}, next at "
                              f"{tenant.next_backup_at:%H:%M:%S} UTC")

    def _wait(self, ids: list[int], timeout: float) -> list[BackupRecord]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = list(BackupRecord.objects.filter(pk__in=ids).order_by("schema_name"))
            if all(r.is_finished for r in current):
                return current
            time.sleep(0.3)
        raise CommandError(f"Backups did not finish within {timeout:.0f} s; see var/demo-worker.log.")

    def _wait_automatic(self, tenants, since, timeout: float) -> list[BackupRecord]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = {r.schema_name: r for r in BackupRecord.objects.filter(
                backup_type=BackupRecord.Type.AUTOMATIC, created_at__gte=since).order_by("created_at")}
            if len(found) == len(tenants) and all(r.is_finished for r in found.values()):
                time.sleep(1.0)  # let record_backup move last_backup_at
                return sorted(found.values(), key=lambda r: r.schema_name)
            time.sleep(0.5)
        raise CommandError(f"Automatic backups did not all run within {timeout:.0f} s; see var/demo-beat.log.")

    def _print(self, records: list[BackupRecord]) -> None:
        header = f"{'tenant':18} {'file':54} {'size':>10} {'sha256':16} {'duration':>8}  status"
        self.stdout.write(header)
        self.stdout.write("-" * len(header))
        for r in records:
            duration = f"{r.duration_seconds:.2f}s" if r.duration_seconds is not None else "-"
            size = f"{r.size / 1e6:.2f} MB" if r.size else "-"
            self.stdout.write(f"{r.schema_name:18} {r.file_name:54} {size:>10} {r.sha256[:16]:16} {duration:>8}  "
                              f"{r.status}{': ' + r.error if r.error else ''}")
        if any(r.status != BackupRecord.Status.SUCCEEDED for r in records):
            raise CommandError("Some backups failed; see the status column and var/demo-worker.log.")
