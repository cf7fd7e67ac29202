"""The PostgreSQL client binaries and connection parameters the pipeline runs with."""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from django.db import connections
from psycopg import pq

from backups.conf import backups_settings
from backups.core.errors import BackupConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PgBinaries:
    """Paths of pg_dump, pg_restore and psql of one release line, and that line."""

    pg_dump: str
    pg_restore: str
    psql: str
    version: str
    major: int


def server_version_num(alias: str = "default") -> int:
    """The server's version as an integer (150020 for 15.20)."""
    with connections[alias].cursor() as cursor:
        cursor.execute("SHOW server_version_num")
        return int(cursor.fetchone()[0])


def _candidate_dirs(major: int) -> list[Path]:
    configured = backups_settings.BACKUPS_PG_BIN_DIR
    if configured:
        return [Path(configured)]
    dirs = [Path(f"/usr/lib/postgresql/{major}/bin"), Path(f"/usr/pgsql-{major}/bin")]
    found = shutil.which("pg_dump")
    if found:
        dirs.append(Path(os.path.realpath(found)).parent)
    return dirs


def _version_of(binary: Path) -> tuple[str, int] | None:
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return None
    match = re.search(r"(\d+)(?:\.(\d+))?", out)
    return (match.group(0), int(match.group(1))) if match else None


@functools.cache
def find_binaries(server_major: int) -> PgBinaries:
    """The client binaries whose major version is the server's (or newer), versioned, not Debian's wrapper."""
    for directory in _candidate_dirs(server_major):
        pg_dump = directory / "pg_dump"
        if not pg_dump.is_file():
            continue
        found = _version_of(pg_dump)
        if found and found[1] >= server_major:
            return PgBinaries(str(pg_dump), str(directory / "pg_restore"), str(directory / "psql"), *found)
    where = backups_settings.BACKUPS_PG_BIN_DIR or "/usr/lib/postgresql/<major>/bin or PATH"
    raise BackupConfigError(
        f"No pg_dump of PostgreSQL {server_major} or newer found in {where}: install postgresql-client-{server_major}"
        " or set BACKUPS_PG_BIN_DIR."
    )


def binaries(alias: str = "default") -> PgBinaries:
    """Client binaries matching the server behind the Django connection `alias`."""
    return find_binaries(server_version_num(alias) // 10000)


APP_NAME = "tenant-backups"
DEFAULT_CONNECT_TIMEOUT = "10"
_SETTINGS_KEYS = {"NAME": "dbname", "USER": "user", "PASSWORD": "password", "HOST": "host", "PORT": "port"}


@functools.cache
def libpq_keywords() -> dict[str, str | None]:
    """Every connection keyword the installed libpq knows, with its PG* variable (None when it has none).

    Read from libpq itself (PQconndefaults), so a keyword a newer libpq adds needs no change here.
    """
    return {o.keyword.decode(): o.envvar.decode() if o.envvar else None for o in pq.Conninfo.get_defaults()}


def connection_params(alias: str = "default", dbname: str | None = None) -> dict[str, str]:
    """The libpq parameters Django's connection `alias` is made with: OPTIONS, then NAME/USER/.../PORT over them.

    The same precedence as Django's PostgreSQL backend, so pg_dump, psql and our own psycopg connections reach
    the server the way Django does (TLS settings, target_session_attrs, passfile...). Non-libpq OPTIONS
    (isolation_level, pool, server_side_binding...) are Django's or psycopg's and are left out.
    """
    db = connections[alias].settings_dict
    known = libpq_keywords()
    params = {k: str(v) for k, v in (db.get("OPTIONS") or {}).items() if k in known and v not in (None, "")}
    params.update({key: str(db[name]) for name, key in _SETTINGS_KEYS.items() if db.get(name) not in (None, "")})
    if dbname:
        params["dbname"] = dbname
    return params


# What a client tool may see of the worker's environment besides libpq's own PG* variables: where to find files
# (~/.pgpass, ~/.postgresql/root.crt), the locale, the time zone, temporary files and Kerberos. Never the rest:
# the worker's environment holds its storage keys, age identities and Django's secret key.
_TOOL_VARIABLES = frozenset({"HOME", "PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", "KRB5CCNAME", "KRB5_CONFIG",
                             "KRB5_KTNAME"})


def tool_env() -> dict[str, str]:
    """The part of this process's environment a PostgreSQL client tool needs: PG*, locale, HOME, PATH, TZ."""
    return {k: v for k, v in os.environ.items()
            if k.startswith(("PG", "LC_")) or k in _TOOL_VARIABLES}


def libpq_env(alias: str = "default", dbname: str | None = None) -> dict[str, str]:
    """Environment for pg_dump/pg_restore: tool_env() with Django's connection settings as PG* over it.

    PG* variables the process already has are kept (libpq gives them to Django's connection too) unless
    DATABASES sets the same parameter. The password travels as PGPASSWORD (or the user's PGPASSFILE), never
    on a command line. Parameters libpq reads from no variable (keepalives, sslpassword...) reach Django's and
    `connect()`'s connections only; they are logged once so the gap is visible.
    """
    env = tool_env()
    known = libpq_keywords()
    for key, value in connection_params(alias, dbname).items():
        if known[key]:
            env[known[key]] = value
        else:
            _warn_not_passed(key)
    env.setdefault("PGAPPNAME", APP_NAME)
    env.setdefault("PGCONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT)
    return {k: v for k, v in env.items() if v != ""}


def pg_dump_env(alias: str = "default") -> dict[str, str]:
    """libpq_env for pg_dump: BACKUPS_PG_DUMP_OPTIONS appended to PGOPTIONS (the user's own options stay first).

    At thousands of schemas PostgreSQL 15 plans one of pg_dump's catalog queries so badly that it is most of every
    call (see backups.conf); a session setting fixes the plan without touching what is dumped."""
    env = libpq_env(alias)
    extra = _dump_options()
    if extra:
        env["PGOPTIONS"] = f"{env.get('PGOPTIONS', '')} {extra}".strip()
    return env


def _dump_options() -> str:
    return backups_settings.BACKUPS_PG_DUMP_OPTIONS.strip()


def check_pg_dump_options(alias: str = "default") -> None:
    """Start-up check: the server accepts BACKUPS_PG_DUMP_OPTIONS (else every pg_dump would fail to connect)."""
    extra = _dump_options()
    if not extra:
        return
    try:
        with connect(alias, options=pg_dump_env(alias)["PGOPTIONS"]) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise BackupConfigError(f"BACKUPS_PG_DUMP_OPTIONS={extra!r} is refused by the server ({message}): pg_dump "
                                "would fail with it; correct it or set it empty.") from None


@functools.cache
def _warn_not_passed(key: str) -> None:
    logger.warning("DATABASES OPTIONS %r has no libpq environment variable: pg_dump and psql run without it", key)


def connect(alias: str = "default", dbname: str | None = None, **kwargs: Any) -> psycopg.Connection:
    """A new psycopg connection beside Django's (snapshots, scratch databases, locks), made as Django makes its own."""
    params: dict[str, Any] = connection_params(alias, dbname)
    if "application_name" not in params and not os.environ.get("PGAPPNAME"):
        params["application_name"] = APP_NAME
    return psycopg.connect(**{**params, **kwargs})


def quote_ident(name: str) -> str:
    """A double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'
