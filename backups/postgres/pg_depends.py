"""What a tenant schema shares with the rest of the database, read from pg_depend.

`DROP SCHEMA ... CASCADE` silently takes objects elsewhere with it (`dependents_outside` names them first), and a
scratch database made from template0 lacks what the tenant uses from other schemas (`prepare_scratch` builds it
from the live catalog, so a verify drill fails only on real damage).

Every query walks pg_depend through its two indexes (referenced and dependent object) starting from the schema's
pg_namespace row, the way `DROP SCHEMA` itself finds what to remove: no catalog is scanned whole (pg_class,
pg_type, pg_proc and pg_constraint have no index on their namespace column), so the cost follows the tenant's
size, not the database's. Dependencies PostgreSQL does not record (names inside PL/pgSQL bodies, search_path
lookups at run time) are not seen.
"""

from __future__ import annotations

import contextlib
import graphlib
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from backups.core.errors import RestoreFailed, SchemaNotFound
from backups.postgres import pgtools
from backups.postgres.pipes import STDERR_TAIL
from backups.storage.spools import spool_dir

T = TypeVar("T")


def _loc(o: str) -> str:
    """SQL for the oid of the schema object `o` (classid, objid) lives in; NULL for objects outside schemas.

    Parts of a relation (defaults, triggers, rules, policies) live where their relation does."""
    return f"""CASE {o}.classid
        WHEN 'pg_class'::regclass THEN (SELECT relnamespace FROM pg_class WHERE oid = {o}.objid)
        WHEN 'pg_type'::regclass THEN (SELECT typnamespace FROM pg_type WHERE oid = {o}.objid)
        WHEN 'pg_proc'::regclass THEN (SELECT pronamespace FROM pg_proc WHERE oid = {o}.objid)
        WHEN 'pg_constraint'::regclass THEN (SELECT connamespace FROM pg_constraint WHERE oid = {o}.objid)
        WHEN 'pg_attrdef'::regclass THEN (SELECT lr.relnamespace FROM pg_attrdef lx
            JOIN pg_class lr ON lr.oid = lx.adrelid WHERE lx.oid = {o}.objid)
        WHEN 'pg_trigger'::regclass THEN (SELECT lr.relnamespace FROM pg_trigger lx
            JOIN pg_class lr ON lr.oid = lx.tgrelid WHERE lx.oid = {o}.objid)
        WHEN 'pg_rewrite'::regclass THEN (SELECT lr.relnamespace FROM pg_rewrite lx
            JOIN pg_class lr ON lr.oid = lx.ev_class WHERE lx.oid = {o}.objid)
        WHEN 'pg_policy'::regclass THEN (SELECT lr.relnamespace FROM pg_policy lx
            JOIN pg_class lr ON lr.oid = lx.polrelid WHERE lx.oid = {o}.objid)
        WHEN 'pg_default_acl'::regclass THEN (SELECT defaclnamespace FROM pg_default_acl WHERE oid = {o}.objid)
        WHEN 'pg_namespace'::regclass THEN {o}.objid
        WHEN 'pg_extension'::regclass THEN NULL::oid
        ELSE (SELECT ln.oid FROM pg_namespace ln
              WHERE ln.nspname = (pg_identify_object({o}.classid, {o}.objid, 0)).schema)
    END"""


def _dropped(name: str, seed: str, *, bounded: bool) -> str:
    """A recursive CTE `name` (classid, objid, objsubid, loc): what dropping the `seed` objects with CASCADE removes.

    Dependents are followed, and an object that is an internal part of another (a view's rule, an FK's triggers)
    brings its owner, as PostgreSQL's findDependentObjects does. `bounded`: only objects located in the schemas of
    %(bound)s are followed further (the others are listed, not expanded)."""
    return f"""{name}(classid, objid, objsubid, loc) AS (
        {seed}
      UNION
        SELECT n.classid, n.objid, n.objsubid, {_loc('n')} FROM {name} c CROSS JOIN LATERAL (
            SELECT d.classid, d.objid, d.objsubid FROM pg_depend d
            WHERE d.refclassid = c.classid AND d.refobjid = c.objid AND (c.objsubid = 0 OR d.refobjsubid = c.objsubid)
            UNION ALL
            SELECT d.refclassid, d.refobjid, d.refobjsubid FROM pg_depend d
            WHERE d.classid = c.classid AND d.objid = c.objid AND (c.objsubid = 0 OR d.objsubid = c.objsubid)
              AND d.deptype = 'i'
        ) n
        {"WHERE c.loc = ANY(%(bound)s::oid[])" if bounded else ""}
    )"""


def _seed_schemas(param: str) -> str:
    return (f"SELECT 'pg_namespace'::regclass::oid, n.oid, 0, n.oid FROM pg_namespace n "
            f"WHERE n.nspname = ANY(%({param})s::text[])")


_SYSTEM_OIDS = "SELECT oid FROM pg_namespace WHERE nspname IN ('pg_catalog', 'information_schema', 'pg_toast')"
_NOT_SYSTEM = "({v} IS NULL OR {v} NOT IN (" + _SYSTEM_OIDS + "))"

_DEPENDENTS_SQL = f"""WITH RECURSIVE {_dropped("dropped", _seed_schemas("schemas"), bounded=False)}
SELECT DISTINCT x.type || ' ' || x.identity FROM dropped c
CROSS JOIN LATERAL pg_identify_object(c.classid, c.objid, c.objsubid) x
WHERE c.loc IS DISTINCT FROM %(nsp)s AND c.loc IS DISTINCT FROM 'pg_toast'::regnamespace
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = c.classid AND d.objid = c.objid
                  AND d.objsubid = c.objsubid AND d.deptype = 'i')
  AND NOT (c.objsubid <> 0 AND EXISTS (
      SELECT 1 FROM dropped w WHERE w.classid = c.classid AND w.objid = c.objid AND w.objsubid = 0))
ORDER BY 1"""

# Parts of a needed object that pg_dump writes with it or before the tenant can use it (a table's defaults,
# checks, keys, indexes and rules; a domain's checks). FKs and triggers are not restored. Read from the catalogs'
# own indexes: pg_depend has no index on deptype, and a shared table has one FK per tenant referencing it.
_ATTACHED = """SELECT 'pg_attrdef'::regclass::oid, a.oid FROM pg_attrdef a
            WHERE x.classid = 'pg_class'::regclass AND a.adrelid = x.objid
        UNION ALL SELECT 'pg_constraint'::regclass::oid, k.oid FROM pg_constraint k
            WHERE x.classid = 'pg_class'::regclass AND k.conrelid = x.objid AND k.contype NOT IN ('f', 't')
        UNION ALL SELECT 'pg_constraint'::regclass::oid, k.oid FROM pg_constraint k
            WHERE x.classid = 'pg_type'::regclass AND k.conrelid = 0 AND k.contypid = x.objid
        UNION ALL SELECT 'pg_class'::regclass::oid, i.indexrelid FROM pg_index i
            WHERE x.classid = 'pg_class'::regclass AND i.indrelid = x.objid
        UNION ALL SELECT 'pg_rewrite'::regclass::oid, r.oid FROM pg_rewrite r
            WHERE x.classid = 'pg_class'::regclass AND r.ev_class = x.objid"""

_DEPENDENCIES_SQL = f"""WITH RECURSIVE {_dropped("tenant", _seed_schemas("schemas"), bounded=True)},
inside AS (SELECT classid, objid, objsubid FROM tenant WHERE loc = %(nsp)s),
needed(classid, objid, loc) AS (
    SELECT r.classid, r.objid, l.loc FROM (
        SELECT DISTINCT d.refclassid AS classid, d.refobjid AS objid FROM inside i
        JOIN pg_depend d ON d.classid = i.classid AND d.objid = i.objid AND (i.objsubid = 0 OR d.objsubid = i.objsubid)
        WHERE d.refclassid <> 'pg_namespace'::regclass
    ) r CROSS JOIN LATERAL (SELECT {_loc('r')} AS loc) l
    WHERE l.loc IS DISTINCT FROM %(nsp)s AND {_NOT_SYSTEM.format(v='l.loc')}
  UNION
    SELECT n.classid, n.objid, n.loc FROM needed x CROSS JOIN LATERAL (
        SELECT d.refclassid AS classid, d.refobjid AS objid FROM pg_depend d
        WHERE d.classid = x.classid AND d.objid = x.objid AND d.refclassid <> 'pg_namespace'::regclass
        UNION ALL
        {_ATTACHED}
    ) n0 CROSS JOIN LATERAL (SELECT n0.classid, n0.objid, {_loc('n0')} AS loc) n
    WHERE x.classid <> 'pg_extension'::regclass
      AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = x.classid AND e.objid = x.objid AND e.deptype = 'e')
      AND n.loc IS DISTINCT FROM %(nsp)s AND {_NOT_SYSTEM.format(v='n.loc')}
)
SELECT 'schema'::text, s.nspname::text, ''::text FROM needed x JOIN pg_namespace s ON s.oid = x.loc
UNION
SELECT 'extension', e.extname, s.nspname FROM needed x
    LEFT JOIN pg_depend d ON d.classid = x.classid AND d.objid = x.objid AND d.deptype = 'e'
    JOIN pg_extension e ON e.oid = CASE WHEN x.classid = 'pg_extension'::regclass THEN x.objid ELSE d.refobjid END
    JOIN pg_namespace s ON s.oid = e.extnamespace
UNION
SELECT 'fk', s.nspname, t.relname FROM inside i
    JOIN pg_constraint k ON i.classid = 'pg_constraint'::regclass AND k.oid = i.objid AND k.contype = 'f'
    JOIN pg_class t ON t.oid = k.confrelid JOIN pg_namespace s ON s.oid = t.relnamespace
    WHERE t.relnamespace <> %(nsp)s
ORDER BY 1, 2, 3"""

# Of the entries about to be restored (catalog oids, object oids), those that cannot be created without something
# not restored (a tenant's table, a cast, a foreign server), and everything that depends on those. A part without
# an entry of its own (a view's rule, a default or check, a composite type's columns) is written inside its
# owner's statement: it takes the owner along.
_UNRESTORABLE_SQL = f"""WITH RECURSIVE toc(classid, objid) AS (
    SELECT * FROM unnest(%(classids)s::oid[], %(objids)s::oid[])
),
parts(classid, objid, owner_classid, owner_objid) AS (
    SELECT 'pg_attrdef'::regclass::oid, a.oid, t.classid, t.objid FROM toc t
        JOIN pg_attrdef a ON t.classid = 'pg_class'::regclass AND a.adrelid = t.objid
    UNION ALL SELECT 'pg_rewrite'::regclass::oid, w.oid, t.classid, t.objid FROM toc t
        JOIN pg_rewrite w ON t.classid = 'pg_class'::regclass AND w.ev_class = t.objid
    UNION ALL SELECT 'pg_constraint'::regclass::oid, k.oid, t.classid, t.objid FROM toc t
        JOIN pg_constraint k ON k.contype = 'c' AND (t.classid = 'pg_class'::regclass AND k.conrelid = t.objid
            OR t.classid = 'pg_type'::regclass AND k.conrelid = 0 AND k.contypid = t.objid)
    UNION ALL SELECT 'pg_class'::regclass::oid, y.typrelid, t.classid, t.objid FROM toc t
        JOIN pg_type y ON t.classid = 'pg_type'::regclass AND y.oid = t.objid AND y.typrelid <> 0
),
members(classid, objid, owner_classid, owner_objid) AS (
    SELECT classid, objid, classid, objid FROM toc
    UNION ALL SELECT * FROM parts p
        WHERE NOT EXISTS (SELECT 1 FROM toc t WHERE t.classid = p.classid AND t.objid = p.objid)
),
seeds AS (
    SELECT DISTINCT m.owner_classid AS classid, m.owner_objid AS objid FROM members m
    JOIN pg_depend d ON d.classid = m.classid AND d.objid = m.objid
    CROSS JOIN LATERAL (SELECT d.refclassid AS classid, d.refobjid AS objid) r
    WHERE d.refclassid NOT IN ('pg_namespace'::regclass, 'pg_extension'::regclass)
      AND NOT coalesce({_loc('r')} = ANY(%(bound)s::oid[] || array({_SYSTEM_OIDS})), false)
      AND NOT EXISTS (SELECT 1 FROM pg_depend e
                      WHERE e.classid = d.refclassid AND e.objid = d.refobjid AND e.deptype = 'e')
),
{_dropped("unrestorable", f"SELECT s.classid, s.objid, 0, {_loc('s')} FROM seeds s", bounded=True)}
SELECT DISTINCT classid::int, objid::int FROM unrestorable"""


@dataclass
class Dependencies:
    """What a tenant schema needs from the rest of the database.

    schemas: every other schema holding an object the tenant's objects depend on, directly or through other
    objects (FK targets, sequences of defaults, functions of defaults, triggers and views, column types and
    domains), system schemas left out. fk_tables: (schema, table) the tenant's foreign keys reference outside it.
    extensions: (name, schema) of the extensions owning any of those objects."""

    schemas: list[str] = field(default_factory=list)
    fk_tables: list[tuple[str, str]] = field(default_factory=list)
    extensions: list[tuple[str, str]] = field(default_factory=list)


@contextlib.contextmanager
def _cursor(conn: Any) -> Iterator[Any]:
    """A cursor on `conn` (a psycopg or Django connection or cursor) in a transaction, the caller's (under a
    savepoint) or else one of ours, with JIT off: compiling these catalog walks takes longer than running them
    (0.6-1 s against 10-50 ms). The setting is put back after, so the caller's transaction keeps its own."""
    if isinstance(conn, psycopg.Connection | psycopg.Cursor):
        block = (conn if isinstance(conn, psycopg.Connection) else conn.connection).transaction()
    else:
        from django.db import transaction

        block = transaction.atomic(using=getattr(conn, "db", conn).alias)
    with block, (contextlib.nullcontext(conn) if hasattr(conn, "fetchall") else conn.cursor()) as cur:
        cur.execute("SELECT current_setting('jit'), set_config('jit', 'off', true)")
        jit = cur.fetchone()[0]
        yield cur
        cur.execute("SELECT set_config('jit', %s, true)", (jit,))


def _namespace(cur: Any, schema: str) -> int:
    cur.execute("SELECT oid FROM pg_namespace WHERE nspname = %s", (schema,))
    row = cur.fetchone()
    if row is None:
        raise SchemaNotFound(f"Schema {schema!r} does not exist in the database.")
    return int(row[0])


def dependents_outside(conn: Any, schema: str) -> list[str]:
    """Objects outside `schema` that `DROP SCHEMA schema CASCADE` would drop or alter, as
    "<type> <qualified identity>" (pg_identify_object): "view public.v", "default value for public.t.id",
    "table constraint t_fk on public.t", "table column public.t.c", "trigger trg on public.t", "extension x"...

    Includes objects reached only through others (a view on such a view) and objects that belong to no schema
    (an extension created in `schema`, a publication's membership). Parts reported through their owner (a view's
    rule, an FK's triggers) are not repeated. `conn`: a psycopg connection or cursor, or a Django connection or
    cursor; the query only reads, inside the caller's transaction."""
    with _cursor(conn) as cur:
        nsp = _namespace(cur, schema)
        cur.execute(_DEPENDENTS_SQL, {"schemas": [schema], "nsp": nsp})
        return [row[0] for row in cur.fetchall()]


def dependencies_outside(conn: Any, schema: str) -> Dependencies:
    """What `schema`'s objects depend on in other schemas (see Dependencies); `conn` as for dependents_outside."""
    with _cursor(conn) as cur:
        nsp = _namespace(cur, schema)
        cur.execute(_DEPENDENCIES_SQL, {"schemas": [schema], "bound": [nsp], "nsp": nsp})
        found = Dependencies()
        for kind, a, b in cur.fetchall():
            if kind == "schema":
                found.schemas.append(a)
            elif kind == "extension":
                found.extensions.append((a, b))
            else:
                found.fk_tables.append((a, b))
        return found


def _unrestorable(cur: Any, schemas: list[str], entries: list[tuple[int, int]]) -> set[tuple[int, int]]:
    """Of `entries` (catalog oid, object oid) of `schemas`, those that cannot exist without a schema not among them."""
    cur.execute("SELECT array_agg(oid) FROM pg_namespace WHERE nspname = ANY(%s::text[])", (schemas,))
    bound = list(cur.fetchone()[0] or [])
    cur.execute(_UNRESTORABLE_SQL, {"classids": [c for c, _ in entries], "objids": [o for _, o in entries],
                                    "bound": bound})
    return {(int(c), int(o)) for c, o in cur.fetchall()}


# pg_restore -l entry kinds the scratch database gets: what the tenant's objects can refer to. Foreign keys,
# triggers, policies, checks added NOT VALID, ownership of sequences, comments, ACLs and publications are left out:
# the scratch holds none of their targets or rows, and none of them is needed to load a tenant.
KEPT_KINDS = frozenset({
    "SCHEMA", "TYPE", "SHELL TYPE", "DOMAIN", "FUNCTION", "PROCEDURE", "AGGREGATE", "OPERATOR", "OPERATOR CLASS",
    "OPERATOR FAMILY", "COLLATION", "CONVERSION", "TEXT SEARCH CONFIGURATION", "TEXT SEARCH DICTIONARY",
    "TEXT SEARCH PARSER", "TEXT SEARCH TEMPLATE", "TABLE", "TABLE ATTACH", "VIEW", "MATERIALIZED VIEW", "SEQUENCE",
    "DEFAULT", "CONSTRAINT", "INDEX", "INDEX ATTACH", "RULE", "STATISTICS",
})
_OTHER_KINDS = frozenset({
    "ACCESS METHOD", "ACL", "BLOB", "BLOBS", "BLOB METADATA", "CAST", "CHECK CONSTRAINT", "COMMENT", "DATABASE",
    "DATABASE PROPERTIES", "DEFAULT ACL", "ENCODING", "EVENT TRIGGER", "EXTENSION", "FK CONSTRAINT",
    "FOREIGN DATA WRAPPER", "FOREIGN SERVER", "FOREIGN TABLE", "LARGE OBJECT", "MATERIALIZED VIEW DATA", "POLICY",
    "PROCEDURAL LANGUAGE", "PUBLICATION", "PUBLICATION TABLE", "PUBLICATION TABLES IN SCHEMA", "ROW SECURITY",
    "SEARCHPATH", "SECURITY LABEL", "SEQUENCE OWNED BY", "SEQUENCE SET", "SERVER", "STDSTRINGS", "SUBSCRIPTION",
    "SUBSCRIPTION TABLE", "TABLE DATA", "TRANSFORM", "TRIGGER", "USER MAPPING",
})
_KINDS_LONGEST_FIRST = sorted(KEPT_KINDS | _OTHER_KINDS, key=len, reverse=True)
_TOC_LINE = re.compile(r"^\d+; (\d+) (\d+) (.*)$")


def restorable_entries(listing: str) -> list[tuple[str, int, int]]:
    """The `pg_restore -l` lines of a kind in KEPT_KINDS (an unknown kind is left out), with their (catalog oid,
    object oid)."""
    entries = []
    for line in listing.splitlines():
        match = _TOC_LINE.match(line)
        if match and next((k for k in _KINDS_LONGEST_FIRST if match[3].startswith(k + " ")), None) in KEPT_KINDS:
            entries.append((line, int(match[1]), int(match[2])))
    return entries


def _extensions_in_order(cur: Any, schema: str) -> list[tuple[str, str]]:
    """(name, schema) of the live database's extensions, each after those it requires; those created inside the
    tenant's own schema are left out (its dump re-creates that schema, and pg_dump -n never holds extensions)."""
    cur.execute("""SELECT e.oid, e.extname, n.nspname,
                          array(SELECT d.refobjid FROM pg_depend d WHERE d.classid = 'pg_extension'::regclass
                                AND d.objid = e.oid AND d.refclassid = 'pg_extension'::regclass)
                   FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                   WHERE n.nspname <> %s""", (schema,))
    rows = {oid: (name, nsp, requires) for oid, name, nsp, requires in cur.fetchall()}
    order = graphlib.TopologicalSorter({oid: [r for r in req if r in rows] for oid, (_, _, req) in rows.items()})
    return [(rows[oid][0], rows[oid][1]) for oid in order.static_order()]


def _create_extensions(dbname: str, extensions: list[tuple[str, str]]) -> set[str]:
    """Create the extensions (their schemas first) in the scratch database; return its schemas' names."""
    with pgtools.connect(dbname=dbname) as conn:
        for name, nsp in extensions:
            if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (nsp,)).fetchone():
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(nsp)))
            conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {}").format(
                sql.Identifier(name), sql.Identifier(nsp)))
        schemas = {row[0] for row in conn.execute("SELECT nspname FROM pg_namespace")}
        conn.commit()
    return schemas


@contextlib.contextmanager
def _temp_path(suffix: str) -> Iterator[str]:
    fd, path = tempfile.mkstemp(prefix="tb-scratch-", suffix=suffix, dir=spool_dir())  # mode 0600
    os.close(fd)
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _run(cmd: list[str], env: dict[str, str], what: str) -> str:
    proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        message = proc.stderr.strip()[-STDERR_TAIL:] or "no message"
        raise RestoreFailed(f"{what} exited with status {proc.returncode}: {message}")
    return proc.stdout


def _restore_ddl(cur: Any, dbname: str, schemas: list[str], snapshot: str, existing: set[str]) -> None:
    """pg_dump the schema-only DDL of `schemas` from the snapshot and restore what can exist in the empty scratch
    database; schemas it already has (public, those of extensions) are not created again."""
    bins = pgtools.binaries()
    with _temp_path(".dump") as dump, _temp_path(".list") as listing:
        _run([bins.pg_dump, "--schema-only", "--format=custom", "--strict-names", f"--snapshot={snapshot}",
              f"--file={dump}", *(f"--schema={pgtools.quote_ident(s)}" for s in schemas)],
             pgtools.pg_dump_env(), "pg_dump of the schemas the tenant depends on")
        entries = restorable_entries(_run([bins.pg_restore, "--list", dump], pgtools.libpq_env(), "pg_restore --list"))
        skip = _unrestorable(cur, schemas, [(c, o) for _, c, o in entries])
        cur.execute("SELECT 'pg_namespace'::regclass::oid::int, oid::int FROM pg_namespace "
                    "WHERE nspname = ANY(%s::text[])", ([s for s in schemas if s in existing],))
        skip.update(cur.fetchall())
        with open(listing, "w") as out:
            out.writelines(line + "\n" for line, c, o in entries if (c, o) not in skip)
        _run([bins.pg_restore, f"--dbname={dbname}", f"--use-list={listing}", "--exit-on-error",
              "--single-transaction", "--no-owner", "--no-privileges", dump],
             pgtools.libpq_env(dbname=dbname), "pg_restore of the schemas the tenant depends on")


def _copy_rows(live: Any, dbname: str, tables: list[tuple[str, str]]) -> None:
    """Stream every row of `tables` from the live snapshot into the scratch database, in one transaction."""
    with pgtools.connect(dbname=dbname) as scratch, live.cursor() as src_cur, scratch.cursor() as dst_cur:
        for nsp, table in tables:
            relkind, names = live.execute(
                """SELECT c.relkind, array_agg(a.attname::text ORDER BY a.attnum)
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                        AND a.attgenerated = ''
                   WHERE n.nspname = %s AND c.relname = %s GROUP BY c.relkind""", (nsp, table)).fetchone()
            name = sql.Identifier(nsp, table)
            columns = sql.SQL(", ").join(map(sql.Identifier, names))
            only = sql.SQL("ONLY " if relkind == "r" else "")
            copy_out = sql.SQL("COPY (SELECT {} FROM {}{}) TO STDOUT").format(columns, only, name)
            copy_in = sql.SQL("COPY {} ({}) FROM STDIN").format(name, columns)
            with src_cur.copy(copy_out) as src, dst_cur.copy(copy_in) as dst:
                for chunk in src:
                    dst.write(chunk)
        scratch.commit()


def prepare_scratch(dbname: str, schema: str) -> None:
    """Build in the empty scratch database `dbname` what a load of `schema`'s backup needs from the live database.

    From one snapshot of the live database: every extension it has (in its schema), the schema-only DDL of the
    schemas `schema` depends on (dependencies_outside) without what cannot exist there while empty (foreign keys,
    triggers, objects that need a schema not copied), and every row of the tables the tenant's foreign keys
    reference, so those keys validate in the scratch database exactly as they would live. Raises RestoreFailed."""
    with pgtools.connect() as live:
        live.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        live.execute("SET LOCAL row_security = off")
        live.execute("SET LOCAL jit = off")
        snapshot = live.execute("SELECT pg_export_snapshot()").fetchone()[0]
        with live.cursor() as cur:
            deps = dependencies_outside(cur, schema)
            extensions = _extensions_in_order(cur, schema)
            existing = _scratch_step(f"Creating the extensions {extensions} in the scratch database",
                                     _create_extensions, dbname, extensions)
            if deps.schemas:
                _restore_ddl(cur, dbname, deps.schemas, snapshot, existing)
        if deps.fk_tables:
            _scratch_step(f"Copying the rows of {deps.fk_tables} into the scratch database",
                          _copy_rows, live, dbname, deps.fk_tables)


def _scratch_step(what: str, step: Callable[..., T], *args: Any) -> T:
    try:
        return step(*args)
    except psycopg.Error as exc:
        raise RestoreFailed(f"{what} failed: {str(exc).strip() or type(exc).__name__}") from exc
