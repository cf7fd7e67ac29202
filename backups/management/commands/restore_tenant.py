"""`manage.py restore_tenant <schema> <record_id> [--verify-only | --into <new_schema>] [--noinput]`."""

from django.core.management.base import CommandError

from backups.core.errors import BackupError
from backups.management.base import OpsCommand
from backups.models import BackupRecord
from backups.restore.run import restore_replace, restore_verify
from backups.restore.side import restore_side_copy
from backups.storage import StorageError


class Command(OpsCommand):
    help = ("Replace a tenant's schema with a backup (safety backup first, all-or-nothing), or with "
            "--verify-only restore it into a scratch database and compare row counts with its manifest. "
            "A replace asks you to type the schema name unless --noinput is given. --into <new_schema> restores "
            "it beside the tenant instead, into a new schema of the same database (not a tenant, not routed) for "
            "operators to query; housekeeping drops it after BACKUPS_SIDE_COPY_KEEP_DAYS.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("schema")
        parser.add_argument("record_id", type=int)
        modes = parser.add_mutually_exclusive_group()
        modes.add_argument("--verify-only", action="store_true", help="Restore into a scratch database only.")
        modes.add_argument("--into", metavar="NEW_SCHEMA", default="",
                           help="Restore into this new schema beside the tenant (a side copy); the tenant is "
                                "untouched.")
        parser.add_argument("--noinput", "--no-input", action="store_false", dest="interactive",
                            help="Replace without asking (scripts); the safety backup is still taken.")

    def _confirmed(self, schema: str, record: BackupRecord) -> bool:
        self.stdout.write(f"This replaces the live data of {schema} with backup {record.pk} "
                          f"({record.file_name}, {record.finished_at or record.created_at:%Y-%m-%d %H:%M}). "
                          "A safety backup is taken first.")
        try:
            answer = input(f"Type the schema name ({schema}) to go ahead: ")
        except (EOFError, OSError):  # no terminal to ask on: the answer is no
            return False
        return answer.strip() == schema

    def handle(self, *args, schema: str, record_id: int, verify_only: bool, interactive: bool, into: str = "",
               **options) -> None:
        record = BackupRecord.objects.filter(pk=record_id).first()
        if record is None:
            raise CommandError(f"No backup record {record_id}.")
        if into:
            return self._side_copy(schema, record, into)
        if not verify_only and interactive and not self._confirmed(schema, record):
            raise CommandError("Restore cancelled: nothing was changed.")
        actor = {"command": "restore_tenant"}
        try:
            if verify_only:
                report = restore_verify(schema=schema, record=record, actor=actor)
            else:
                report = restore_replace(schema=schema, record=record, actor=actor)
        except (BackupError, StorageError) as exc:
            raise CommandError(
                f"Restore of backup {record_id} into {schema} failed, nothing was changed: {exc}"
            ) from None
        for table, (expected, found) in sorted(report.row_counts.items()):
            mark = "ok" if expected == found else "MISMATCH"
            shown = "-" if found is None else found
            self.stdout.write(f"{table:40} manifest {expected:>10}  restored {shown:>10}  {mark}")
        if report.safety_record_id:
            self.stdout.write(f"safety backup: record {report.safety_record_id}")
        if not report.ok:
            raise CommandError(report.message)
        self.stdout.write(self.style.SUCCESS(report.message))

    def _side_copy(self, schema: str, record: BackupRecord, into: str) -> None:
        try:
            report = restore_side_copy(schema=schema, record=record, into=into, actor={"command": "restore_tenant"})
        except (BackupError, StorageError) as exc:
            raise CommandError(f"Backup {record.pk} was not restored into {into}, nothing was changed: {exc}") from None
        for table, (expected, found) in sorted(report.row_counts.items()):
            self.stdout.write(f"{table:40} manifest {expected:>10}  restored {found:>10}")
        self.stdout.write(self.style.SUCCESS(report.message))
