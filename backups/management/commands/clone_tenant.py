"""`manage.py clone_tenant <record_id> <new_schema> --domain <domain> [--set FIELD=VALUE ...] [--no-anonymize]`."""

from django.core.management.base import CommandError

from backups.conf import backups_settings
from backups.core.errors import BackupError
from backups.management.base import OpsCommand
from backups.models import BackupRecord
from backups.restore.clone import clone_tenant
from backups.storage import StorageError


class Command(OpsCommand):
    help = ("Make a new tenant (its own identity, its own domain) from a backup, for staging or support: the "
            "backup's data in a new schema, BACKUPS_CLONE_ANONYMIZER run before it commits, no backups and a "
            "disabled schedule. The tenant's other fields are copied from the backup's tenant (--set overrides).")

    def add_arguments(self, parser) -> None:
        parser.add_argument("record_id", type=int)
        parser.add_argument("new_schema")
        parser.add_argument("--domain", required=True, help="The clone's host name (in no tenant's use).")
        parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="values",
                            help="A field of the new tenant (e.g. --set 'nombre=Staging copy'); repeat for more.")
        parser.add_argument("--no-anonymize", action="store_false", dest="anonymize",
                            help="Keep the backup's data as it is, even when BACKUPS_CLONE_ANONYMIZER is set.")

    def handle(self, *args, record_id: int, new_schema: str, domain: str, values: list[str], anonymize: bool,
               **options) -> None:
        record = BackupRecord.objects.filter(pk=record_id).first()
        if record is None:
            raise CommandError(f"No backup record {record_id}.")
        fields = {}
        for item in values:
            name, sep, value = item.partition("=")
            if not sep or not name.strip():
                raise CommandError(f"--set {item!r}: write it as FIELD=VALUE.")
            fields[name.strip()] = value
        try:
            report = clone_tenant(record=record, schema=new_schema, domain=domain, values=fields, anonymize=anonymize,
                                  actor={"command": "clone_tenant"})
        except (BackupError, StorageError) as exc:
            raise CommandError(f"No clone was made from backup {record_id}, nothing was changed: {exc}") from None
        if anonymize and not backups_settings.BACKUPS_CLONE_ANONYMIZER:
            self.stdout.write("BACKUPS_CLONE_ANONYMIZER is not set: the clone holds the backup's data as it is.")
        if report.tokens_removed:
            self.stdout.write(f"{report.tokens_removed} API tokens of the origin's users were not carried over.")
        self.stdout.write(f"tenant identity {report.tenant_uid}, domain {report.domain}")
        self.stdout.write(self.style.SUCCESS(report.message))
