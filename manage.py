#!/usr/bin/env python
"""Django's command-line utility; a missing setting or an unreachable database is one line, not a traceback."""

import atexit
import os
import sys

_exit_code = [1]  # what the process exits with unless main() says otherwise


def _leave_now() -> None:
    """The last exit handler (registered first, so it runs after every other one, logging's and Sentry's flush
    included): end the process without the interpreter's teardown of every module, which costs a command
    about 0.3 s (measured after django.setup()) and does nothing a finished command needs."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(_exit_code[0])


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line
    from django.db.utils import OperationalError, ProgrammingError

    try:
        _say_which_database()
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


def _say_which_database() -> None:
    """Without DATABASE_URL (environment or .env) the settings' default is used, which need not be the database
    `make demo` set up (`make manage` reads var/services.env): one line on stderr names it."""
    if os.environ.get("DATABASE_URL"):
        return
    from django.conf import settings

    db = settings.DATABASES["default"]  # reads .env, which may set it
    if os.environ.get("DATABASE_URL"):
        return
    print(f"manage.py: DATABASE_URL is not set; using the default database {db['NAME']} at "
          f"{db['HOST'] or 'localhost'}:{db['PORT'] or 5432} (`make manage ARGS=\"...\"` uses var/services.env's).",
          file=sys.stderr)


def _run() -> None:
    atexit.register(_leave_now)
    try:
        main()
    except SystemExit as exc:
        code = exc.code
        _exit_code[0] = 0 if code is None else code if isinstance(code, int) else 1
        raise
    _exit_code[0] = 0


if __name__ == "__main__":
    _run()
