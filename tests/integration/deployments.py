"""A whole private deployment for disaster tests: its own database and storage folder, driven through manage.py in
subprocesses (as an operator would), so dropping and recreating its database never touches the session's."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


class Deployment:
    """One deployment: database `<session db>_<name>`, storage folder `storage`, same keys as the session."""

    def __init__(self, name: str, storage: Path, *, media: Path | None = None, **env: str) -> None:
        url = os.environ["DATABASE_URL"]
        parts = urlsplit(url)
        self.dbname = f"{parts.path.lstrip('/')}_{name}"
        self.url = urlunsplit((parts.scheme, parts.netloc, "/" + self.dbname, parts.query, parts.fragment))
        self.admin_url = urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, parts.fragment))
        self.storage = storage
        self.media = media or storage.parent / f"media-{name}"  # the tenants' files: MEDIA_ROOT/<schema>/
        self.env = {**os.environ, "DATABASE_URL": self.url, "BACKUPS_STORAGE": "local",
                    "BACKUPS_LOCAL_ROOT": str(storage), "BACKUPS_LOCK_DATABASE_URL": "", "MEDIA_ROOT": str(self.media),
                    **env}

    # --- the database --------------------------------------------------------------------------------------
    def create_empty(self) -> None:
        """Drop the database if it exists, and create it empty (what a lost deployment's operator starts from)."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.dbname)))
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
                sql.Identifier(self.dbname)))

    def drop(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.dbname)))

    def query(self, statement: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(statement, params).fetchall()

    def schemas(self) -> list[str]:
        return [r[0] for r in self.query(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%%' AND nspname <> 'information_schema' "
            "ORDER BY 1")]

    def fingerprints(self, schema: str, *, skip: tuple[str, ...] = (), where: dict[str, str] | None = None
                     ) -> dict[str, tuple[int, str]]:
        """Row count and md5 of every row's text per table of `schema`: equal fingerprints, equal data."""
        out = {}
        with psycopg.connect(self.url, autocommit=True) as conn:
            tables = [r[0] for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (schema,))]
            for table in tables:
                if skip and table.startswith(skip):
                    continue
                filt = sql.SQL(" WHERE " + where[table]) if where and table in where else sql.SQL("")
                has_ct = conn.execute(
                    "SELECT 1 FROM information_schema.columns WHERE table_schema = %s AND table_name = %s AND "
                    "column_name = 'content_type_id'", (schema, table)).fetchone()
                if has_ct and not (where and table in where) and "django_content_type" in tables:
                    # content types by natural key: a json restore (and any migrated schema) numbers them its own way
                    out[table] = tuple(conn.execute(sql.SQL(
                        "SELECT count(*), coalesce(md5(string_agg(r, '|' ORDER BY r)), '') FROM (SELECT "
                        "(to_jsonb(t) - 'content_type_id' || jsonb_build_object('content_type', c.app_label || '.' "
                        "|| c.model))::text AS r FROM {s}.{t} t LEFT JOIN {s}.django_content_type c "
                        "ON c.id = t.content_type_id) x"
                    ).format(s=sql.Identifier(schema), t=sql.Identifier(table))).fetchone())
                    continue
                out[table] = tuple(conn.execute(sql.SQL(
                    "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {}.{} t"
                ).format(sql.Identifier(schema), sql.Identifier(table)) + filt).fetchone())
        return out

    def files(self, schema: str) -> dict[str, str]:
        """path -> SHA-256 of every file of the tenant (MEDIA_ROOT/<schema>/)."""
        root = self.media / schema
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    # --- the operator's commands -----------------------------------------------------------------------------
    def manage(self, *args: str, check: bool = True, timeout: float = 600, **env: str
               ) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**self.env, **env},
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def python(self, code: str) -> str:
        """Run `code` in the deployment's Django (manage.py shell -c); its stdout."""
        return self.manage("shell", "-c", code).stdout

    def copy_storage(self, to: Path) -> Path:
        shutil.copytree(self.storage, to)
        return to
