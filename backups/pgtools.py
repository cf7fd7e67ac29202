"""The PostgreSQL client binaries and connection parameters the pipeline runs with."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg
from django.db import connections

from . import conf
from .errors import BackupConfigError


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
    configured = conf.get("BACKUPS_PG_BIN_DIR")
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
    where = conf.get("BACKUPS_PG_BIN_DIR") or "/usr/lib/postgresql/<major>/bin or PATH"
    raise BackupConfigError(
        f"No pg_dump of PostgreSQL {server_major} or newer found in {where}: install postgresql-client-{server_major}"
        " or set BACKUPS_PG_BIN_DIR."
    )


def binaries(alias: str = "default") -> PgBinaries:
    """Client binaries matching the server behind the Django connection `alias`."""
    return find_binaries(server_version_num(alias) // 10000)


def libpq_env(alias: str = "default", dbname: str | None = None) -> dict[str, str]:
    """Environment for pg_dump/psql: connection in PG* variables, password never on a command line."""
    db = connections[alias].settings_dict
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({"PGHOST": db.get("HOST") or "", "PGPORT": str(db.get("PORT") or 5432),
                "PGUSER": db.get("USER") or "", "PGDATABASE": dbname or db["NAME"],
                "PGAPPNAME": "tenant-backups", "PGCONNECT_TIMEOUT": "10"})
    if db.get("PASSWORD"):
        env["PGPASSWORD"] = db["PASSWORD"]
    return {k: v for k, v in env.items() if v != ""}


def connect(alias: str = "default", dbname: str | None = None, **kwargs) -> psycopg.Connection:
    """A new psycopg connection beside Django's (for snapshots and scratch databases)."""
    db = connections[alias].settings_dict
    params = {"host": db.get("HOST") or None, "port": db.get("PORT") or None, "user": db.get("USER") or None,
              "password": db.get("PASSWORD") or None, "dbname": dbname or db["NAME"],
              "application_name": "tenant-backups"}
    return psycopg.connect(**{k: v for k, v in params.items() if v is not None}, **kwargs)


def quote_ident(name: str) -> str:
    """A double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'
