"""`manage.py recover_deployment [--noinput] [--dry-run]`: the whole deployment back from the storage alone."""

import sys

from django.core.management.base import CommandError
from django.db import DatabaseError

from backups.core.errors import BackupError
from backups.housekeeping.recovery import RecoveryRefused, deployment_recover, recovery_summary
from backups.management.base import OpsCommand
from backups.storage import StorageError


class Command(OpsCommand):
    help = ("On an empty database with the storage settings and keys of a lost deployment: restore the newest good "
            "public-schema backup (or recreate tenants from the identities in the signed manifests), rebuild the "
            "catalog from the manifests, then restore every tenant's newest good backup in parallel. Run it again "
            "to resume; it exits with status 1 when anything could not be recovered.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--noinput", "--no-input", action="store_false", dest="interactive",
                            help="Do not ask for confirmation (scripts).")
        parser.add_argument("--dry-run", action="store_true", help="Say what would be restored; change nothing.")
        parser.add_argument("--workers", type=int, default=None,
                            help="Tenants restored at once (default: BACKUPS_MAX_CONCURRENT_DUMPS).")

    def _say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()

    def handle(self, *args, interactive: bool, dry_run: bool, workers: int | None, **options) -> None:
        if workers is not None and workers < 1:
            raise CommandError("--workers must be 1 or more.")
        if interactive and not dry_run:
            self.stdout.write("This restores the public schema and every tenant from the storage into this database "
                              "(tenants that already have a schema are kept).")
            try:
                answer = input("Type 'recover' to go ahead: ")
            except (EOFError, OSError):
                answer = ""
            if answer.strip() != "recover":
                raise CommandError("Recovery cancelled: nothing was changed.")
        try:
            result = deployment_recover(dry_run=dry_run, say=self._say, workers=workers)
        except RecoveryRefused as exc:
            raise CommandError(str(exc)) from None
        except (BackupError, StorageError, DatabaseError) as exc:
            raise CommandError(f"Recovery stopped: {exc}".strip()) from None
        summary = recovery_summary(result)
        self.stdout.write("")
        self.stdout.write(f"public schema: {summary['public_schema']}")
        if dry_run:
            for schema, key in sorted(result.planned.items()):
                self.stdout.write(f"would restore {schema} from {key}")
            for schema in result.created:
                self.stdout.write(f"would recreate tenant {schema} from its backups' identity")
        else:
            self.stdout.write(f"tenants restored: {summary['tenants_restored']}, kept (already there): "
                              f"{summary['tenants_kept']}, failed: {len(summary['tenants_failed'])}")
            for schema, why in sorted(summary["tenants_failed"].items()):
                self.stdout.write(f"FAILED {schema}: {why}")
        for schema, why in sorted(result.not_created.items()):
            self.stdout.write(f"NOT RECREATED {schema}: {why}")
        if result.survey.refused:
            self.stdout.write(f"{len(result.survey.refused)} stored backups were refused (see above)")
        if not result.ok and not dry_run:
            self.stderr.write("recover_deployment: not everything could be recovered (see above); run it again "
                              "after fixing the cause: what was restored is kept.")
            sys.exit(1)
