"""`manage.py reconcile_backups`: bring the catalog and the storage back into agreement (or only report)."""

from django.core.management.base import BaseCommand

from backups.housekeeping.reconcile import storage_reconcile


class Command(BaseCommand):
    help = ("Compare backup records with the configured storage: records whose object is gone are marked failed, "
            "objects whose record is gone are rebuilt from the manifest beside them. Nothing in storage is deleted.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("schemas", nargs="*", help="Only these tenants (default: every schema the catalog knows).")
        parser.add_argument("--dry-run", action="store_true", help="Report only; change no record.")

    def handle(self, *args, schemas: list[str], dry_run: bool, **options) -> None:
        result = storage_reconcile(schemas=schemas or None, dry_run=dry_run)
        verb = "would be" if dry_run else "were"
        for key in result.missing:
            self.stdout.write(f"missing object, record marked failed: {key}")
        for key in result.imported:
            self.stdout.write(f"record rebuilt from its manifest: {key}")
        for key in result.unknown:
            self.stdout.write(f"object without record or manifest (left alone): {key}")
        for key, why in sorted(result.rejected.items()):
            self.stdout.write(f"object refused, not imported (left alone): {key}: {why}")
        for key in result.copy_missing:
            self.stdout.write(f"copy missing from the copy target, copy marked failed (copied again): {key}")
        for key in result.copy_unknown:
            self.stdout.write(f"object in the copy target without a copy (left alone): {key}")
        self.stdout.write(f"{result.schemas} schemas checked: {len(result.missing)} records {verb} marked failed, "
                          f"{len(result.imported)} {verb} rebuilt, {len(result.unknown)} unknown objects, "
                          f"{len(result.rejected)} refused.")
