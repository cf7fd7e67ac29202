"""Owners and grants of a tenant's schema: read from the catalog at backup time, put back after a restore.

pg_dump runs with `--no-owner --no-acl` so that a dump never depends on roles while it is made and the batch
split writes one kind of script; without this module a replace left every object owned by the restoring role
and dropped the grants a least-privilege web role needs. The catalog is read instead (one query for any number
of schemas, so a batch pays once), kept in the manifest under "privileges", and re-applied in the restore's own
transaction: ownership first (which moves owned sequences with their tables), then each grant as the owner
made it, column grants and the schema's default privileges. A role the manifest names that this cluster lacks
refuses the restore before anything changes; BACKUPS_RESTORE_PRIVILEGES=False restores without them (every
object then belongs to the restoring role, as pg_restore --no-owner --no-acl would leave it).
"""

from __future__ import annotations

import json
from typing import Any

from backups.conf import backups_settings
from backups.core.errors import RestoreFailed

_RELATION_KINDS = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE",
                   "f": "FOREIGN TABLE"}
_GRANT_ON = {"TABLE": "TABLE", "VIEW": "TABLE", "MATERIALIZED VIEW": "TABLE", "SEQUENCE": "SEQUENCE",
             "FOREIGN TABLE": "TABLE", "FUNCTION": "FUNCTION", "PROCEDURE": "PROCEDURE", "AGGREGATE": "FUNCTION",
             "TYPE": "TYPE", "DOMAIN": "DOMAIN", "SCHEMA": "SCHEMA"}
_DEFAULT_KINDS = {"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES"}

# One row per object of the schemas: (schema, kind, name, owner, grants as JSON or NULL, follows its table).
# A sequence owned by a column follows its table's owner (PostgreSQL refuses to change it alone), not its grants.
_OBJECTS = """
WITH ns AS (SELECT oid, nspname FROM pg_namespace WHERE nspname = ANY(%(schemas)s)),
objects AS (
SELECT ns.nspname, 'SCHEMA' AS kind, NULL AS name, n.nspowner AS owner, n.nspacl AS acl, false AS follows
  FROM pg_namespace n JOIN ns ON ns.oid = n.oid
UNION ALL
SELECT ns.nspname, c.relkind::text, quote_ident(c.relname), c.relowner, c.relacl,
       c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                   AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
                                   AND d.deptype IN ('a', 'i'))
  FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
UNION ALL
SELECT ns.nspname, CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END,
       quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')', p.proowner, p.proacl,
       false
  FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
 WHERE NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                   AND d.deptype = 'e')
UNION ALL
SELECT ns.nspname, CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, quote_ident(t.typname), t.typowner,
       t.typacl, false
  FROM pg_type t JOIN ns ON ns.oid = t.typnamespace
 WHERE t.typtype IN ('d', 'e', 'r', 'c') AND t.typelem = 0
   AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
)
SELECT o.nspname, o.kind, o.name, pg_get_userbyid(o.owner),
       CASE WHEN o.acl IS NULL THEN NULL ELSE
         (SELECT coalesce(json_agg(json_build_array(
                   CASE x.grantee WHEN 0 THEN 'PUBLIC' ELSE pg_get_userbyid(x.grantee) END,
                   x.privilege_type, x.is_grantable) ORDER BY x.grantee, x.privilege_type), '[]'::json)
            FROM aclexplode(o.acl) x) END,
       o.follows
  FROM objects o
"""
_COLUMNS = """
SELECT n.nspname, quote_ident(c.relname), quote_ident(a.attname),
       CASE x.grantee WHEN 0 THEN 'PUBLIC' ELSE pg_get_userbyid(x.grantee) END, x.privilege_type, x.is_grantable
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace,
       LATERAL aclexplode(a.attacl) x
 WHERE n.nspname = ANY(%(schemas)s) AND a.attacl IS NOT NULL AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY 1, 2, 3, 4, 5
"""
_DEFAULTS = """
SELECT n.nspname, pg_get_userbyid(d.defaclrole), d.defaclobjtype::text,
       CASE x.grantee WHEN 0 THEN 'PUBLIC' ELSE pg_get_userbyid(x.grantee) END, x.privilege_type, x.is_grantable
  FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace, LATERAL aclexplode(d.defaclacl) x
 WHERE n.nspname = ANY(%(schemas)s)
 ORDER BY 1, 2, 3, 4, 5
"""


def capture(cur: Any, schemas: list[str]) -> dict[str, dict]:
    """schema -> its owners and grants as the manifest keeps them (see restore_statements)."""
    found: dict[str, dict] = {s: {"objects": [], "columns": [], "defaults": [], "roles": []} for s in schemas}
    cur.execute(_OBJECTS, {"schemas": list(schemas)})
    rows = cur.fetchall()
    for schema, kind, name, owner, acl, follows in rows:
        if isinstance(acl, str):
            acl = json.loads(acl)
        obj = {"kind": _RELATION_KINDS.get(kind, kind), "name": name, "owner": owner, "acl": acl}
        if follows:
            obj["follows_table"] = True
        found[schema]["objects"].append(obj)
    cur.execute(_COLUMNS, {"schemas": list(schemas)})
    for schema, table, column, grantee, privilege, grantable in cur.fetchall():
        found[schema]["columns"].append([table, column, grantee, privilege, grantable])
    cur.execute(_DEFAULTS, {"schemas": list(schemas)})
    for schema, role, objtype, grantee, privilege, grantable in cur.fetchall():
        found[schema]["defaults"].append([role, objtype, grantee, privilege, grantable])
    for data in found.values():
        roles = {o["owner"] for o in data["objects"]}
        roles |= {item[0] for o in data["objects"] for item in (o["acl"] or [])}
        roles |= {c[2] for c in data["columns"]} | {d[0] for d in data["defaults"]} | {d[2] for d in data["defaults"]}
        data["roles"] = sorted(roles - {"PUBLIC"})
    return found


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _role(name: str) -> str:
    return "PUBLIC" if name == "PUBLIC" else _q(name)


def _target(schema: str, obj: dict) -> str:
    return _q(schema) if obj["kind"] == "SCHEMA" else f"{_q(schema)}.{obj['name']}"


def wanted(manifest: dict) -> bool:
    """Whether a restore of this backup puts owners and grants back: the setting is on and the manifest has them."""
    return backups_settings.BACKUPS_RESTORE_PRIVILEGES and isinstance(manifest.get("privileges"), dict)


def require_roles(cur: Any, manifest: dict) -> None:
    """Refuse, naming them, when roles the backup's owners and grants need are missing from this cluster."""
    if not wanted(manifest):
        return
    roles = [r for r in manifest["privileges"].get("roles") or [] if isinstance(r, str)]
    cur.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (roles,))
    missing = sorted(set(roles) - {row[0] for row in cur.fetchall()})
    if missing:
        raise RestoreFailed(f"The backup's objects belong to or are granted to roles this database does not have: "
                            f"{', '.join(missing)}. Create them, or set BACKUPS_RESTORE_PRIVILEGES=False to restore "
                            "without owners and grants; nothing was changed.")


def restore_statements(schema: str, privileges: dict) -> list[tuple[str, str | None]]:
    """(statement, the object it needs or None) pairs that put owners and grants back on `schema`'s objects.

    Grants are made as the owner made them (a superuser's grant is recorded as the owner's); grant chains through
    WITH GRANT OPTION holders are flattened to the owner. An object that is not there (a json restore holds
    Django's tables only) is skipped by the caller through the second element.
    """
    out: list[tuple[str, str | None]] = []
    objects = [o for o in privileges.get("objects") or [] if o.get("kind") in _GRANT_ON]
    for obj in objects:
        if obj.get("follows_table"):
            continue
        target = _target(schema, obj)
        need = None if obj["kind"] == "SCHEMA" else _exists_check(obj["kind"], target)
        out.append((f"ALTER {obj['kind']} {target} OWNER TO {_q(obj['owner'])}", need))
    for obj in objects:
        if obj.get("acl") is None:
            continue  # never changed: the owner's defaults, as the new object already has
        target, on = _target(schema, obj), _GRANT_ON[obj["kind"]]
        need = None if obj["kind"] == "SCHEMA" else _exists_check(obj["kind"], target)
        out.append((f"REVOKE ALL ON {on} {target} FROM PUBLIC, {_q(obj['owner'])}", need))
        for grantee, privilege, grantable in obj["acl"]:
            option = " WITH GRANT OPTION" if grantable else ""
            out.append((f"GRANT {privilege} ON {on} {target} TO {_role(grantee)}{option}", need))
    for table, column, grantee, privilege, grantable in privileges.get("columns") or []:
        target = f"{_q(schema)}.{table}"
        option = " WITH GRANT OPTION" if grantable else ""
        out.append((f"GRANT {privilege} ({column}) ON TABLE {target} TO {_role(grantee)}{option}",
                    _exists_check("TABLE", target)))
    for role, objtype, grantee, privilege, grantable in privileges.get("defaults") or []:
        if objtype in _DEFAULT_KINDS:
            option = " WITH GRANT OPTION" if grantable else ""
            out.append((f"ALTER DEFAULT PRIVILEGES FOR ROLE {_q(role)} IN SCHEMA {_q(schema)} GRANT {privilege} ON "
                        f"{_DEFAULT_KINDS[objtype]} TO {_role(grantee)}{option}", None))
    return out


def _exists_check(kind: str, target: str) -> str:
    function = {"FUNCTION": "to_regprocedure", "PROCEDURE": "to_regprocedure", "AGGREGATE": "to_regprocedure",
                "TYPE": "to_regtype", "DOMAIN": "to_regtype"}.get(kind, "to_regclass")
    return f"SELECT {function}({_literal(target)}) IS NOT NULL"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def apply(cur: Any, schema: str, manifest: dict) -> int:
    """Put the backup's owners and grants back inside the caller's transaction; returns statements run."""
    if not wanted(manifest):
        return 0
    cur.execute("SET CONSTRAINTS ALL IMMEDIATE")  # ALTER TABLE refuses a table with deferred checks still pending
    ran = 0
    checked: dict[str, bool] = {}
    for statement, need in restore_statements(schema, manifest["privileges"]):
        if need is not None:
            if need not in checked:
                cur.execute(need)
                checked[need] = bool(cur.fetchone()[0])
            if not checked[need]:
                continue
        cur.execute(statement)
        ran += 1
    return ran
