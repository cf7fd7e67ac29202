"""Put a public-schema backup back (recover_deployment only): the shared tables of a lost deployment.

The same rules as a tenant's replace: verify before execute (the stored object's size and SHA-256 must match its
signed manifest before pg_restore sees a byte), no interpreter (pg_restore only writes SQL, which psycopg sends),
one transaction that commits only when every table has the rows the manifest counted. What public held before
(an empty schema, or the empty tables of `migrate_schemas --shared`) is dropped inside that transaction, so a
failure leaves it as it was. The archive's own `CREATE SCHEMA public` (and its comment) are left out with
pg_restore's list: the database's public schema keeps its owner and grants.
"""

from __future__ import annotations

import os
import tempfile
import uuid

from backups.core.errors import RestoreFailed
from backups.models import BackupRecord
from backups.postgres import pgtools, privileges
from backups.postgres.sql_loader import load_script
from backups.restore.run import manifest_counts, pg_restore_script, require_counts, table_counts
from backups.storage import Storage
from backups.storage.reading import VerifiedBackup, open_backup

PUBLIC = "public"
# pg_restore --list lines of the schema itself: `2; 2615 2200 SCHEMA - public owner`, `3355; 0 0 COMMENT - SCHEMA
# public owner`
_SCHEMA_ENTRIES = (" SCHEMA - public ", " COMMENT - SCHEMA public ")

_DROP_CONTENTS = """
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT c.oid::regclass AS name, c.relkind FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                             AND d.deptype = 'e')
  LOOP
    EXECUTE format('DROP %s IF EXISTS %s CASCADE',
                   CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
                                  WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, r.name);
  END LOOP;
  FOR r IN SELECT p.oid::regprocedure AS name FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = 'public'
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                             AND d.deptype = 'e')
  LOOP
    EXECUTE format('DROP ROUTINE IF EXISTS %s CASCADE', r.name);
  END LOOP;
END $$
"""


def record_from_manifest(key: str, manifest: dict) -> BackupRecord:
    """An unsaved record describing a stored backup by its (already trusted) signed manifest: what reading and
    checking it needs, before any catalog exists."""
    return BackupRecord(
        pk=None, tenant_uid=uuid.UUID(manifest["tenant_uid"]), schema_name=manifest["schema"],
        file_name=manifest["file_name"], storage_key=key, format=manifest["format"],
        compression=manifest["compression"], encryption="age" if manifest.get("encryption") else "",
        size=manifest["size"], sha256=manifest["sha256"], plain_sha256=manifest.get("plain_sha256", ""),
        status=BackupRecord.Status.SUCCEEDED, manifest=manifest)


def _entries_without_the_schema(backup: VerifiedBackup) -> str:
    """The archive's table of contents minus the public schema's own entries, as a pg_restore --use-list file."""
    with pg_restore_script(backup.plain(), ("--list",)) as chunks:
        listing = b"".join(chunks).decode("utf-8")
    kept = [line for line in listing.splitlines()
            if line.startswith(";") or not any(marker in line + " " for marker in _SCHEMA_ENTRIES)]
    return "\n".join(kept) + "\n"


def _extensions(conn, manifest: dict) -> None:
    """The extensions the backup's database had in public, created first (a default may call one)."""
    for ext in manifest.get("extensions") or ():
        if isinstance(ext, dict) and ext.get("schema") == PUBLIC and isinstance(ext.get("name"), str):
            conn.execute(f"CREATE EXTENSION IF NOT EXISTS {pgtools.quote_ident(ext['name'])} SCHEMA public")


def public_schema_restore(*, storage: Storage, key: str, manifest: dict) -> dict[str, int | None]:
    """Replace whatever public holds with the backup at `key` (its signed manifest given), in one transaction;
    the restored row counts. Raises StoredObjectDamaged / VerificationFailed / RestoreFailed, changing nothing."""
    if manifest.get("format") != BackupRecord.Format.DUMP:
        raise RestoreFailed(f"The public-schema backup {key} is not a custom archive (format dump).")
    record = record_from_manifest(key, manifest)
    counts = manifest_counts(record)
    with open_backup(storage, record) as backup:
        fd, list_path = tempfile.mkstemp(prefix="tb-public-list-", suffix=".txt")
        try:
            with os.fdopen(fd, "w") as out:
                out.write(_entries_without_the_schema(backup))
            with pgtools.connect() as conn:
                privileges.require_roles(conn.cursor(), manifest)
                conn.execute(_DROP_CONTENTS)
                _extensions(conn, manifest)
                with pg_restore_script(backup.plain(), (f"--use-list={list_path}", "--file=-")) as chunks:
                    load_script(conn, chunks)
                privileges.apply(conn.cursor(), PUBLIC, manifest)
                found = table_counts(conn, PUBLIC, list(counts))
                require_counts(counts, found)
                conn.commit()
        finally:
            os.unlink(list_path)
    return found
