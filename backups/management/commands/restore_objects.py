"""`manage.py restore_objects <schema> <record_id> <app_label.Model> <pk> [<pk> ...] [--dry-run]`."""

from django.core.management.base import CommandError

from backups.core.errors import BackupError
from backups.management.base import OpsCommand
from backups.models import BackupRecord
from backups.restore.objects import ObjectsReport, restore_objects
from backups.storage import StorageError

SHOWN = 20


def _pks(pks: list) -> str:
    text = ", ".join(map(str, pks[:SHOWN]))
    return text + (f", ... ({len(pks) - SHOWN} more)" if len(pks) > SHOWN else "")


class Command(OpsCommand):
    help = ("Put back objects of a tenant's backup and, recursively, every object of the backup that pointed at "
            "them (what deleting them took along: a patient with its appointments, treatments and invoices), "
            "where the live tenant lacks them. Rows that exist live are left as they are and reported as "
            "conflicts; nothing live is overwritten; one transaction. --dry-run prints what would be inserted.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("schema")
        parser.add_argument("record_id", type=int)
        parser.add_argument("model", help="app_label.Model, e.g. clinic.Patient")
        parser.add_argument("pks", nargs="+", help="Primary keys of the objects to restore.")
        parser.add_argument("--dry-run", action="store_true", help="Print what would be inserted; change nothing.")

    def handle(self, *args, schema: str, record_id: int, model: str, pks: list[str], dry_run: bool,
               **options) -> None:
        record = BackupRecord.objects.filter(pk=record_id).first()
        if record is None:
            raise CommandError(f"No backup record {record_id}.")
        try:
            report = restore_objects(schema=schema, record=record, model=model, pks=pks, dry_run=dry_run,
                                     actor={"command": "restore_objects"})
        except (BackupError, StorageError) as exc:
            raise CommandError(f"Objects of backup {record_id} were not restored into {schema}, nothing was "
                               f"changed: {exc}") from None
        self._print(report)

    def _print(self, report: ObjectsReport) -> None:
        verb = "to insert" if report.dry_run else "inserted"
        for label, pks in report.inserted.items():
            parents = report.parents.get(label)
            note = f"; {len(parents)} of them because restored rows point at them" if parents else ""
            self.stdout.write(f"{label}: {len(pks)} {verb} ({_pks(pks)}){note}")
        for label, pks in report.conflicts.items():
            self.stdout.write(f"{label}: {len(pks)} conflicts, left as they are live ({_pks(pks)})")
        if not report.inserted:
            self.stdout.write("Nothing is missing from the live tenant.")
        if report.dry_run:
            self.stdout.write("Dry run: nothing was changed.")
        self.stdout.write(self.style.SUCCESS(report.message))
