"""The base of the ops commands: what an operator's or cron's run needs, and nothing more."""

from __future__ import annotations

from django.core.management.base import BaseCommand


class OpsCommand(BaseCommand):
    """A command run by operators and cron: it needs the database, not Django's project-wide checks.

    `manage.py check` still runs those; run before every command they import every app's templates and cost
    ~0.35 s a run.
    """

    requires_system_checks: list[str] = []
