"""`manage.py erase_tenant_backups <schema> [--identity UUID] [--noinput]`: a data-erasure request."""

import uuid

from django.core.management.base import CommandError
from django_tenants.utils import get_tenant_model

from backups.core.errors import BackupError
from backups.housekeeping.erasure import tenant_erase
from backups.management.base import OpsCommand
from backups.models import BackupCopy, BackupRecord, TenantKey
from backups.storage import StorageError


class Command(OpsCommand):
    help = ("Erase every backup of a tenant in every target (primary and second target) and destroy its data key "
            "everywhere, so what cannot be deleted (a locked object, an unreachable copy) cannot be read either. "
            "Asks you to type the schema name unless --noinput is given. The audit trail records the erasure.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("schema", help="The schema the backups were taken from (the tenant may be deleted).")
        parser.add_argument("--identity", default=None,
                            help="The tenant identity (UUID) to erase, when several tenants used the schema name.")
        parser.add_argument("--noinput", "--no-input", action="store_false", dest="interactive",
                            help="Erase without asking (scripts).")

    def _identity(self, schema: str, identity: str | None) -> uuid.UUID:
        if identity is not None:
            try:
                return uuid.UUID(identity)
            except ValueError:
                raise CommandError(f"--identity {identity!r} is not a UUID.") from None
        uids = (set(BackupRecord.objects.filter(schema_name=schema).values_list("tenant_uid", flat=True))
                | set(BackupCopy.objects.filter(schema_name=schema).values_list("tenant_uid", flat=True))
                | set(TenantKey.objects.filter(schema_name=schema, destroyed_at__isnull=True)
                      .values_list("tenant_uid", flat=True)))
        live = get_tenant_model().objects.filter(schema_name=schema).values_list("tenant_uid", flat=True).first()
        if not uids:
            raise CommandError(f"No backups of schema {schema!r} to erase (no record, copy or data key names it).")
        if len(uids) > 1:
            named = ", ".join(f"{u}{' (the live tenant)' if u == live else ''}" for u in sorted(uids, key=str))
            raise CommandError(f"Several tenant identities used schema {schema!r}: {named}; choose one with "
                               "--identity.")
        return next(iter(uids))

    def handle(self, *args, schema: str, identity: str | None, interactive: bool, **options) -> None:
        uid = self._identity(schema, identity)
        count = BackupRecord.objects.filter(tenant_uid=uid).count()
        if interactive:
            self.stdout.write(f"This deletes the {count} backups of {schema} (identity {uid}) in every target and "
                              "destroys its data key: they can never be restored again.")
            try:
                answer = input(f"Type the schema name ({schema}) to go ahead: ")
            except (EOFError, OSError):
                answer = ""
            if answer.strip() != schema:
                raise CommandError("Erasure cancelled: nothing was deleted.")
        try:
            result = tenant_erase(tenant_uid=uid, actor={"command": "erase_tenant_backups"})
        except (BackupError, StorageError) as exc:
            raise CommandError(f"Erasure of {schema} not done: {exc}") from None
        self.stdout.write(f"{result.deleted} objects deleted, {result.records} records forgotten, "
                          f"{len(result.keys.keys)} data keys destroyed.")
        for line in result.locked:
            self.stdout.write(f"left under its lock: {line}")
        for line in result.unreachable + result.keys.left:
            self.stdout.write(f"could not delete: {line}")
        if result.complete:
            self.stdout.write(self.style.SUCCESS(f"Every backup of {schema} is erased."))
        elif result.unreadable:
            self.stdout.write(self.style.WARNING(
                f"What is left of {schema} is encrypted to its data key, destroyed everywhere: it cannot be read. "
                "Run this again once the locks end (or the targets answer) to delete it."))
        else:
            raise CommandError(f"The erasure of {schema} is incomplete, and what is left is not (all) encrypted to a "
                               "data key of its own: it stays readable until it is deleted. Run this again once the "
                               "locks end or the targets answer.")
