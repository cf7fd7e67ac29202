"""`manage.py check_backups`: which tenants' automatic backups are overdue, for monitoring (exit status 1 if any)."""

import sys

from backups.catalog.selectors import overdue_tenants
from backups.management.base import OpsCommand
from backups.ops.overdue import likely_cause


class Command(OpsCommand):
    help = ("List the tenants whose automatic backups are overdue (beat stopped, backups failing or stuck). "
            "Exit status 0 when none is, 1 otherwise: usable from cron, Nagios or a container health check.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--grace", type=int, default=None,
                            help="Seconds a slot may be late before it counts (default BACKUPS_OVERDUE_GRACE_SECONDS).")

    def handle(self, *args, grace: int | None = None, **options) -> None:
        overdue = overdue_tenants(grace_seconds=grace)
        if not overdue:
            self.stdout.write("OK: no tenant is overdue for backup.")
            return
        self.stdout.write(f"OVERDUE: {len(overdue)} tenant(s) behind on automatic backups")
        for item in overdue:
            self.stdout.write(f"  {item.describe()}")
        cause = likely_cause(overdue)
        if cause:
            self.stdout.write(f"Likely cause: {cause}")
        sys.exit(1)
