#!/usr/bin/env python
"""Django's command-line utility; a missing setting or an unreachable database is one line, not a traceback."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line
    from django.db.utils import OperationalError, ProgrammingError

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        sys.exit(f"manage.py: {exc} (`make manage ARGS=\"...\"` runs a command with the local environment).")
    except OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        sys.exit(f"manage.py: the database is not reachable ({first}); start it with `make services`, or run "
                 "`make manage ARGS=\"...\"`, which reads the servers' addresses from var/services.env.")
    except ProgrammingError as exc:
        if "does not exist" not in str(exc):
            raise
        first = str(exc).strip().splitlines()[0]
        sys.exit(f"manage.py: the database is not set up ({first}); run `make demo`, or "
                 "`manage.py migrate_schemas` for your own database.")


if __name__ == "__main__":
    main()
