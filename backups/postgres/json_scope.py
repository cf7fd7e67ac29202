"""What a json backup does not hold: the objects of a tenant's schema beyond its Django models' tables.

A json backup carries the rows of the tenant apps' models, and a json restore rebuilds the schema by migrating
it. Anything else in the schema (a table no model describes, a view, a function, a trigger, a type, a standalone
sequence, an extension installed there) is not in the backup, so a json replace would drop it. The restore asks
`json_restore_refusal` first and refuses rather than dropping what it cannot put back.
"""

from __future__ import annotations

from django.apps import apps
from django.db import connection

from backups.conf import backups_settings
from backups.postgres.dumpers import json_models

MAX_NAMED = 10

_RELKINDS = {"r": "table", "p": "table", "v": "view", "m": "materialized view", "f": "foreign table",
             "S": "sequence"}
_TYPKINDS = {"c": "type", "e": "type", "r": "type", "b": "type", "p": "type", "d": "domain"}
_PROKINDS = {"f": "function", "p": "procedure", "a": "aggregate", "w": "window function"}

_NOT_EXTENSION_MEMBER = (
    "NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = '{catalog}'::regclass AND e.objid = {oid} "
    "AND e.deptype = 'e')")

_RELATIONS_SQL = f"""
SELECT c.relkind, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND NOT c.relispartition
  AND {_NOT_EXTENSION_MEMBER.format(catalog='pg_class', oid='c.oid')}
  AND NOT (c.relkind = 'S' AND EXISTS (
      SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
      AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
ORDER BY c.relname
"""

_TYPES_SQL = f"""
SELECT t.typtype, t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN pg_class c ON c.oid = t.typrelid
WHERE n.nspname = %s AND (t.typrelid = 0 OR c.relkind = 'c') AND t.typtype <> 'm'
  AND NOT EXISTS (SELECT 1 FROM pg_type el WHERE el.typarray = t.oid)
  AND {_NOT_EXTENSION_MEMBER.format(catalog='pg_type', oid='t.oid')}
ORDER BY t.typname
"""

_ROUTINES_SQL = f"""
SELECT p.prokind, p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = %s AND {_NOT_EXTENSION_MEMBER.format(catalog='pg_proc', oid='p.oid')}
ORDER BY 2
"""

_TRIGGERS_SQL = """
SELECT t.tgname, c.relkind, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND NOT t.tgisinternal
ORDER BY c.relname, t.tgname
"""

_RULES_SQL = """
SELECT r.rulename, c.relkind, c.relname FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND r.rulename <> '_RETURN'
ORDER BY c.relname, r.rulename
"""

_POLICIES_SQL = """
SELECT p.polname, c.relkind, c.relname FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s
ORDER BY c.relname, p.polname
"""

_EXTENSIONS_SQL = """
SELECT e.extname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE n.nspname = %s ORDER BY e.extname
"""


def held_tables() -> set[str]:
    """Tables a json restore puts back: the models of dumpers.json_models() (their rows travel), their
    auto-created many-to-many tables, the models BACKUPS_JSON_EXCLUDE leaves out on purpose (migrating the
    schema recreates their content: content types, permissions), and django_migrations."""
    models = list(json_models())
    for label in backups_settings.BACKUPS_JSON_EXCLUDE:
        try:
            models.append(apps.get_model(label))
        except (LookupError, ValueError):
            continue
    tables = {"django_migrations"}
    for model in models:
        tables.add(model._meta.db_table)
        for field in model._meta.local_many_to_many:
            through = field.remote_field.through
            if through is not None and through._meta.auto_created:
                tables.add(through._meta.db_table)
    return tables


def _on(relkind: str) -> str:
    return _RELKINDS.get(relkind, "relation")


def objects_outside_models(schema: str) -> list[str]:
    """Readable names ("table public_stats", "function f(integer)", "trigger t on table x") of the objects of
    `schema` a json backup does not hold.

    Read from the catalog: relations other than the held tables (sequences owned by a table column, indexes,
    constraints and TOAST go with their table and are never named apart), types other than tables' row types,
    arrays and multiranges, routines, triggers, rules and policies not made by PostgreSQL itself, and extensions
    installed in the schema (their member objects are named by the extension alone).
    """
    held = held_tables()
    found: list[str] = []
    with connection.cursor() as cur:
        cur.execute(_RELATIONS_SQL, (schema,))
        found += [f"{_RELKINDS[kind]} {name}" for kind, name in cur.fetchall()
                  if not (kind in ("r", "p") and name in held)]
        cur.execute(_TYPES_SQL, (schema,))
        found += [f"{_TYPKINDS.get(kind, 'type')} {name}" for kind, name in cur.fetchall()]
        cur.execute(_ROUTINES_SQL, (schema,))
        found += [f"{_PROKINDS.get(kind, 'function')} {signature}" for kind, signature in cur.fetchall()]
        for sql, what in ((_TRIGGERS_SQL, "trigger"), (_RULES_SQL, "rule"), (_POLICIES_SQL, "policy")):
            cur.execute(sql, (schema,))
            found += [f"{what} {name} on {_on(kind)} {table}" for name, kind, table in cur.fetchall()]
        cur.execute(_EXTENSIONS_SQL, (schema,))
        found += [f"extension {name}" for (name,) in cur.fetchall()]
    return found


def json_restore_refusal(schema: str) -> str | None:
    """Why a json replace of `schema` must be refused (naming up to MAX_NAMED of the objects it would drop),
    or None when the schema holds nothing beyond what a json backup carries."""
    objects = objects_outside_models(schema)
    if not objects:
        return None
    named = ", ".join(objects[:MAX_NAMED])
    if len(objects) > MAX_NAMED:
        named += f" and {len(objects) - MAX_NAMED} more"
    return (f"The live schema holds objects a json backup does not carry ({named}); a json replace would drop "
            "them. Restore a sql or dump backup instead.")
