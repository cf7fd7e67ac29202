"""`manage.py migrate_backup_keys`: move backups stored before tenant identities under `<schema>/<tenant_uid>/`."""

from django.core.management.base import BaseCommand, CommandError

from backups.housekeeping.key_migration import backup_keys_migrate


class Command(BaseCommand):
    help = ("Move every backup object still stored as <schema>/<file> (made before tenant identities) to "
            "<schema>/<tenant_uid>/<file>, checking its SHA-256 on the way; the old object is deleted only "
            "once the record points at the new one. Run once after upgrading.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="List what would move; change nothing.")

    def handle(self, *args, dry_run: bool, **options) -> None:
        result = backup_keys_migrate(dry_run=dry_run)
        for key in result.moved:
            self.stdout.write(f"{'would move' if dry_run else 'moved to'}: {key}")
        for key, why in result.failed.items():
            self.stderr.write(f"not moved: {key}: {why}")
        self.stdout.write(f"{len(result.moved)} {'would be' if dry_run else 'were'} moved, "
                          f"{len(result.failed)} failed.")
        if result.failed:
            raise CommandError(f"{len(result.failed)} backups could not be moved; see above.")
