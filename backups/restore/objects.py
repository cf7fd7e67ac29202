"""Objects back, with what hung from them: a receptionist deleted a patient yesterday, and the patient comes back
with its appointments, treatments and invoices while everything written since stays.

In one transaction on Django's connection: the verified backup is loaded into a temporary side schema (the
machinery of side copies, backups.restore.side), the named objects are looked up there, and the relations
Django's deletion collector follows are walked over the side schema's rows (reverse foreign keys and one-to-ones
with CASCADE, PROTECT, RESTRICT, SET_NULL, SET_DEFAULT or SET(); generic relations; auto-created many-to-many
tables), so what a delete of those objects would have taken with it is what is looked for. Rows missing live are
inserted into the live schema with their primary keys, parents first; rows the restored ones point at and the
live schema lacks come back too (a foreign key must land on something). Rows that exist live are left as they
are and reported as conflicts; nothing live is updated or deleted; sequences only ever move forward. The side
schema is dropped in the same transaction, so nothing stays behind whatever happens; a dry run rolls it all back
after the inserts and the foreign-key checks ran, so it reports exactly what a real run would do.
"""

from __future__ import annotations

import logging
import secrets
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.contrib.contenttypes.fields import GenericRelation
from django.core.exceptions import ValidationError
from django.db import DatabaseError, IntegrityError, connection, models, transaction
from django.db.models.deletion import DO_NOTHING, get_candidate_relations_to_delete

from backups.catalog.records import backup_event_create
from backups.catalog.sources import open_backup_or_copy
from backups.core.errors import BackupError, RestoreFailed
from backups.models import BackupEvent, BackupRecord
from backups.postgres import pgtools
from backups.postgres.dumpers import json_models
from backups.restore.run import checked_record, mark_if_damaged
from backups.restore.side import fresh_session, load_beside

logger = logging.getLogger(__name__)

SHOWN_PKS = 1000  # per model, in the report and the audit event (counts are always whole)
CONTENT_TYPE = "contenttypes.contenttype"
PERMISSION = "auth.permission"


class ObjectsRefused(RestoreFailed):
    """Bad input for an objects restore (unknown model, a model outside the tenant's apps, a pk not in the
    backup, a pk of the wrong type): nothing was changed."""


def _q(name: str) -> str:
    return pgtools.quote_ident(name)


def _label(model: type[models.Model]) -> str:
    return model._meta.label


def restorable_models() -> dict[str, type[models.Model]]:
    """label_lower -> model of what an objects restore may put back: the tenant apps' concrete models, as a json
    backup holds them (content types and permissions are rebuilt by migrations, never restored)."""
    return {m._meta.label_lower: m for m in json_models() if m._meta.managed}


def resolve_model(label: Any) -> type[models.Model]:
    """The tenant model named `app_label.Model` (any case); ObjectsRefused for an unknown one or one outside the
    tenant's apps."""
    if not isinstance(label, str) or label.count(".") != 1:
        raise ObjectsRefused(f"{label!r} is not a model name: give it as app_label.Model (e.g. clinic.Patient).")
    try:
        model = apps.get_model(label)
    except (LookupError, ValueError):
        raise ObjectsRefused(f"There is no model {label!r} in this project.") from None
    model = model._meta.concrete_model
    if model._meta.label_lower not in restorable_models():
        raise ObjectsRefused(f"{model._meta.label} is not a model of the tenant's own apps (its rows do not live in "
                             "a tenant's schema); only those can be restored into a tenant.")
    return model


def parse_pks(model: type[models.Model], pks: Iterable[Any]) -> list[Any]:
    """The primary keys as the model's pk field reads them, in order, without repeats; ObjectsRefused for a
    value that is not one, or for none at all."""
    values: list[Any] = []
    for raw in pks:
        if raw is None or isinstance(raw, bool | dict | list):
            raise ObjectsRefused(f"{raw!r} is not a primary key of {model._meta.label}.")
        try:
            value = model._meta.pk.to_python(raw)
        except (ValidationError, TypeError, ValueError):
            raise ObjectsRefused(f"{raw!r} is not a primary key of {model._meta.label}.") from None
        if value is None or value == "":
            raise ObjectsRefused(f"{raw!r} is not a primary key of {model._meta.label}.")
        if value not in values:
            values.append(value)
    if not values:
        raise ObjectsRefused("Name at least one primary key to restore.")
    return values


@dataclass
class ObjectsReport:
    """What an objects restore put back (or, dry, would put back), and what it left because it exists live."""

    record_id: int
    schema: str
    model: str
    pks: list
    dry_run: bool
    ok: bool = False
    inserted: dict[str, list] = field(default_factory=dict)  # model label -> pks inserted (or to insert)
    conflicts: dict[str, list] = field(default_factory=dict)  # model label -> pks left as they are live
    parents: dict[str, list] = field(default_factory=dict)  # of inserted: rows the others point at, missing live
    message: str = ""

    @property
    def inserted_count(self) -> int:
        return sum(len(v) for v in self.inserted.values())

    @property
    def conflict_count(self) -> int:
        return sum(len(v) for v in self.conflicts.values())

    def as_json(self) -> dict:
        """The report as a job's JSON report and an audit event's details (pks shortened past SHOWN_PKS)."""
        def shown(groups: dict[str, list]) -> dict[str, dict]:
            return {label: {"count": len(pks), "pks": [_plain(p) for p in pks[:SHOWN_PKS]]}
                    for label, pks in groups.items()}

        return {"record_id": self.record_id, "schema": self.schema, "mode": "objects", "model": self.model,
                "pks": [_plain(p) for p in self.pks[:SHOWN_PKS]], "dry_run": self.dry_run, "ok": self.ok,
                "inserted": shown(self.inserted), "conflicts": shown(self.conflicts), "parents": shown(self.parents),
                "inserted_count": self.inserted_count, "conflict_count": self.conflict_count,
                "message": self.message}


def _plain(value: Any) -> Any:
    return value if isinstance(value, int | str) else str(value)


class _DryRun(Exception):
    """Raised to roll a dry run back once it has done everything."""


# --- the walk over the side schema -------------------------------------------------------------------------------

class _Walk:
    """Rows of the side schema `side` to restore into `live`, found from the named ones."""

    def __init__(self, cur, side: str, live: str) -> None:
        self.cur, self.side, self.live = cur, side, live
        tables = _tables(cur, side) & _tables(cur, live)  # a model newer or older than the backup is not walked
        self.walkable = {m for m in restorable_models().values() if m._meta.db_table in tables}
        self.rows: dict[type[models.Model], set] = defaultdict(set)  # everything found in the backup
        self.parents: dict[type[models.Model], set] = defaultdict(set)
        self._live_cache: dict[type[models.Model], set] = defaultdict(set)
        self._content_type_ids: dict[type[models.Model], Any] = {}

    # SQL over either schema -----------------------------------------------------------------------------------
    def _table(self, schema: str, model: type[models.Model]) -> str:
        return f"{_q(schema)}.{_q(model._meta.db_table)}"

    def _column_in(self, schema: str, model: type[models.Model], select: str, column: str,
                   values: Iterable[Any], extra: str = "", params: list | None = None) -> list:
        values = list(values)
        if not values:
            return []
        found: list = []
        for start in range(0, len(values), 10000):
            self.cur.execute(f"SELECT {select} FROM {self._table(schema, model)} WHERE {_q(column)} = ANY(%s){extra}",
                             [values[start:start + 10000], *(params or [])])
            found += [row[0] for row in self.cur.fetchall()]
        return found

    def side_pks(self, model: type[models.Model], column: str, values: Iterable[Any]) -> set:
        """pks of the side schema's rows of `model` whose `column` is one of `values`."""
        return set(self._column_in(self.side, model, _q(model._meta.pk.column), column, values))

    def live_pks(self, model: type[models.Model], pks: Iterable[Any]) -> set:
        """Which of `pks` exist in the live schema."""
        return set(self._column_in(self.live, model, _q(model._meta.pk.column), model._meta.pk.column, pks))

    # the walk ---------------------------------------------------------------------------------------------------
    def start(self, model: type[models.Model], pks: list) -> None:
        if model not in self.walkable:
            raise ObjectsRefused(f"The backup or the live schema has no table {model._meta.db_table} of "
                                 f"{model._meta.label}; nothing was restored.")
        held = self.side_pks(model, model._meta.pk.column, pks)
        missing = [p for p in pks if p not in held]
        if missing:
            shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
            raise ObjectsRefused(f"The backup holds no {model._meta.label} with primary key {shown}; nothing was "
                                 "restored.")
        self.rows[model] |= held
        self._dependents({model: held})
        self._needed_parents()

    def _dependents(self, frontier: dict[type[models.Model], set]) -> None:
        """Everything of the backup that points at the frontier, recursively (the deletion collector's relations)."""
        queue = deque(frontier.items())
        while queue:
            model, pks = queue.popleft()
            found: dict[type[models.Model], set] = defaultdict(set)
            for rel in get_candidate_relations_to_delete(model._meta):
                if rel.on_delete is DO_NOTHING:
                    continue
                related = rel.related_model._meta.concrete_model
                if related not in self.walkable:
                    continue
                fk = rel.field
                target = fk.target_field
                values = pks if target.column == model._meta.pk.column else set(self._column_in(
                    self.side, model, _q(target.column), model._meta.pk.column, pks))
                found[related] |= self.side_pks(related, fk.column, values)
            for generic in model._meta.private_fields:
                if isinstance(generic, GenericRelation):
                    related = generic.related_model._meta.concrete_model
                    if related in self.walkable:
                        found[related] |= self._generic_dependents(model, generic, pks)
            for related, related_pks in found.items():
                new = related_pks - self.rows[related]
                if new:
                    self.rows[related] |= new
                    queue.append((related, new))

    def _side_content_type(self, model: type[models.Model]) -> Any:
        if model not in self._content_type_ids:
            ct = apps.get_model(CONTENT_TYPE)
            self.cur.execute(f"SELECT id FROM {self._table(self.side, ct)} WHERE app_label = %s AND model = %s",
                             [model._meta.app_label, model._meta.model_name])
            row = self.cur.fetchone()
            self._content_type_ids[model] = row[0] if row else None
        return self._content_type_ids[model]

    def _generic_dependents(self, model: type[models.Model], generic: GenericRelation, pks: set) -> set:
        related = generic.related_model._meta.concrete_model
        ct_id = self._side_content_type(model if not generic.for_concrete_model else model._meta.concrete_model)
        if ct_id is None:
            return set()
        ct_column = related._meta.get_field(generic.content_type_field_name).column
        object_field = related._meta.get_field(generic.object_id_field_name)
        values = [object_field.get_prep_value(object_field.to_python(p)) for p in pks]
        return set(self._column_in(self.side, related, _q(related._meta.pk.column), object_field.column, values,
                                   extra=f" AND {_q(ct_column)} = %s", params=[ct_id]))

    def _needed_parents(self) -> None:
        """Rows the restored ones point at (forward foreign keys) that the live schema lacks, recursively."""
        queue = deque((m, set(p)) for m, p in list(self.rows.items()))
        while queue:
            model, pks = queue.popleft()
            for fk in model._meta.concrete_fields:
                if not (fk.is_relation and (fk.many_to_one or fk.one_to_one)):
                    continue
                target_model = fk.related_model._meta.concrete_model
                if target_model not in self.walkable:
                    continue
                values = {v for v in self._column_in(self.side, model, _q(fk.column), model._meta.pk.column, pks)
                          if v is not None}
                if not values:
                    continue
                target_pks = self.side_pks(target_model, fk.target_field.column, values) - self.rows[target_model]
                if not target_pks:
                    continue
                missing = target_pks - self.live_pks(target_model, target_pks)
                if missing:
                    self.rows[target_model] |= missing
                    self.parents[target_model] |= missing
                    queue.append((target_model, missing))


# --- putting rows back -----------------------------------------------------------------------------------------------

def _tables(cur, schema: str) -> set[str]:
    cur.execute("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind IN ('r', 'p')", [schema])
    return {row[0] for row in cur.fetchall()}


def _columns(cur, schema: str, table: str) -> dict[str, tuple[bool, bool]]:
    """column -> (NOT NULL, has a default or is an identity) of a table, in column order."""
    cur.execute(
        "SELECT a.attname, a.attnotnull, (a.atthasdef OR a.attidentity <> '') FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' "
        "ORDER BY a.attnum", [schema, table])
    return {name: (notnull, default) for name, notnull, default in cur.fetchall()}


def _insert_order(models_: Iterable[type[models.Model]]) -> list[type[models.Model]]:
    """Parents before children (forward foreign keys among `models_`); a cycle is broken anywhere, which Django's
    deferred foreign keys allow."""
    pending = sorted(set(models_), key=lambda m: m._meta.label)
    placed: list[type[models.Model]] = []
    while pending:
        for model in pending:
            needs = {f.related_model._meta.concrete_model for f in model._meta.concrete_fields
                     if f.is_relation and f.related_model is not None} & set(pending)
            if not needs - {model}:
                break
        else:
            model = pending[0]
        placed.append(model)
        pending.remove(model)
    return placed


class _Inserter:
    """INSERT ... SELECT from the side schema into the live one, column by column as both tables have them."""

    def __init__(self, cur, side: str, live: str) -> None:
        self.cur, self.side, self.live = cur, side, live

    def _value(self, model: type[models.Model], column: str) -> str:
        """The side row's value of `column`, with content types and permissions mapped to the live schema's ids
        (migrations make them, so their ids may differ from schema to schema)."""
        source = f"s.{_q(column)}"
        fk = next((f for f in model._meta.concrete_fields if f.column == column and f.is_relation), None)
        if fk is None or fk.related_model is None:
            return source
        target = fk.related_model._meta.label_lower
        if target == CONTENT_TYPE:
            ct = apps.get_model(CONTENT_TYPE)._meta.db_table
            return (f"(SELECT l.id FROM {_q(self.live)}.{_q(ct)} l JOIN {_q(self.side)}.{_q(ct)} x "
                    f"ON x.app_label = l.app_label AND x.model = l.model WHERE x.id = {source})")
        if target == PERMISSION:
            ct = apps.get_model(CONTENT_TYPE)._meta.db_table
            perm = apps.get_model(PERMISSION)._meta.db_table
            return (f"(SELECT lp.id FROM {_q(self.live)}.{_q(perm)} lp JOIN {_q(self.live)}.{_q(ct)} lc "
                    f"ON lc.id = lp.content_type_id, {_q(self.side)}.{_q(perm)} xp JOIN {_q(self.side)}.{_q(ct)} xc "
                    f"ON xc.id = xp.content_type_id WHERE xp.id = {source} AND lp.codename = xp.codename "
                    f"AND lc.app_label = xc.app_label AND lc.model = xc.model)")
        return source

    def check_unique(self, model: type[models.Model], pks: list) -> None:
        """Refuse (naming the row) when a row to insert would clash with a different live row on a unique column
        set other than the primary key: the live row is never overwritten, and skipping the restored one would
        strand whatever points at it."""
        table = model._meta.db_table
        pk = model._meta.pk.column
        sets: list[list[str]] = [[f.column] for f in model._meta.concrete_fields if f.unique and not f.primary_key]
        for together in model._meta.unique_together:
            sets.append([model._meta.get_field(name).column for name in together])
        for constraint in model._meta.total_unique_constraints:
            sets.append([model._meta.get_field(name).column for name in constraint.fields])
        for columns in filter(None, sets):  # an expression-only constraint names no fields: the insert checks it
            on = " AND ".join(f"l.{_q(c)} = s.{_q(c)}" for c in columns)
            self.cur.execute(
                f"SELECT s.{_q(pk)}, l.{_q(pk)} FROM {_q(self.side)}.{_q(table)} s JOIN {_q(self.live)}.{_q(table)} l "
                f"ON {on} WHERE s.{_q(pk)} = ANY(%s) AND l.{_q(pk)} <> s.{_q(pk)} LIMIT 1", [pks])
            clash = self.cur.fetchone()
            if clash:
                raise RestoreFailed(
                    f"{model._meta.label} {clash[0]} of the backup has the same {', '.join(columns)} as the live "
                    f"{model._meta.label} {clash[1]}; the live row is never overwritten, so nothing was restored. "
                    "Change or remove the live row first.")

    def insert(self, model: type[models.Model], pks: list) -> int:
        table = model._meta.db_table
        side_cols, live_cols = _columns(self.cur, self.side, table), _columns(self.cur, self.live, table)
        lacking = [c for c, (notnull, default) in live_cols.items() if c not in side_cols and notnull and not default]
        if lacking:
            raise RestoreFailed(f"The live table {table} has required columns the backup's lacks "
                                f"({', '.join(lacking)}): the tenant was migrated since; nothing was restored.")
        columns = [c for c in live_cols if c in side_cols]
        pk = model._meta.pk.column
        names = ", ".join(_q(c) for c in columns)
        values = ", ".join(self._value(model, c) for c in columns)
        total = 0
        for start in range(0, len(pks), 10000):
            self.cur.execute(
                f"INSERT INTO {_q(self.live)}.{_q(table)} ({names}) OVERRIDING SYSTEM VALUE "
                f"SELECT {values} FROM {_q(self.side)}.{_q(table)} s WHERE s.{_q(pk)} = ANY(%s)",
                [pks[start:start + 10000]])
            total += self.cur.rowcount
        return total

    def sequences_forward(self, model: type[models.Model]) -> None:
        """Move the pk's sequence past the highest restored key if it is behind (never back)."""
        table, pk = model._meta.db_table, model._meta.pk.column
        self.cur.execute("SELECT pg_get_serial_sequence(%s, %s)", [f"{_q(self.live)}.{_q(table)}", pk])
        row = self.cur.fetchone()
        if not row or not row[0]:
            return
        sequence = row[0]
        self.cur.execute(
            f"SELECT setval(%s, m) FROM (SELECT max({_q(pk)}) AS m FROM {_q(self.live)}.{_q(table)}) t, "
            f"(SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS v FROM {sequence}) q "
            "WHERE m > q.v", [sequence])


# --- entry point -------------------------------------------------------------------------------------------------

def _side_name(record: BackupRecord) -> str:
    return f"tb_objects_{record.pk}_{secrets.token_hex(4)}"


def _sorted(pks: Iterable[Any]) -> list:
    return sorted(pks, key=lambda p: (str(type(p)), p))


def restore_objects(*, schema: str, record: BackupRecord, model: str | type[models.Model], pks: Iterable[Any],
                    dry_run: bool = False, actor: dict | None = None) -> ObjectsReport:
    """Put back the named objects of the tenant's backup and, recursively, what pointed at them, where the live
    schema lacks them; see the module's docstring. Raises ObjectsRefused for bad input and RestoreFailed (or
    another BackupError) when it cannot; either way nothing was changed."""
    checked_record(schema, record)
    model_class = model if isinstance(model, type) else resolve_model(model)
    if model_class._meta.label_lower not in restorable_models():
        raise ObjectsRefused(f"{model_class._meta.label} is not a model of the tenant's own apps.")
    keys = parse_pks(model_class, pks)
    report = ObjectsReport(record.pk, schema, model_class._meta.label, keys, dry_run)
    side = _side_name(record)
    try:
        with open_backup_or_copy(record) as (backup, _source):
            try:
                with transaction.atomic():
                    load_beside(record=record, backup=backup, into=side)
                    try:
                        _put_back(report, side, schema, model_class, keys)
                    except DatabaseError as exc:  # the walk's reads, a live table unlike the backup's ...
                        raise RestoreFailed(f"Objects could not be restored: {str(exc).strip()}; nothing was "
                                            "restored.") from None
                    with connection.cursor() as cur:
                        cur.execute(f"DROP SCHEMA {_q(side)} CASCADE")
                    if dry_run:
                        raise _DryRun
            except _DryRun:
                pass
    except BackupError as exc:
        mark_if_damaged(record, exc)
        report.message = str(exc)
        backup_event_create(record=record, action=BackupEvent.Action.RESTORE_OBJECTS, actor=actor,
                            details={"ok": False, "model": report.model, "pks": report.as_json()["pks"],
                                     "dry_run": dry_run, "error": str(exc)[:500]})
        raise
    finally:
        fresh_session()
    report.ok = True
    verb = "would be inserted" if dry_run else "inserted"
    report.message = (f"{report.inserted_count} rows {verb}, {report.conflict_count} left as they are live "
                      f"(conflicts), from backup {record.pk} into {schema}.")
    details = report.as_json()
    details.pop("message")
    backup_event_create(record=record, action=BackupEvent.Action.RESTORE_OBJECTS, actor=actor, details=details)
    return report


def _put_back(report: ObjectsReport, side: str, live: str, model: type[models.Model], keys: list) -> None:
    with connection.cursor() as cur:
        walk = _Walk(cur, side, live)
        walk.start(model, keys)
        inserter = _Inserter(cur, side, live)
        to_insert: dict[type[models.Model], list] = {}
        for found_model, pks in walk.rows.items():
            if not pks:
                continue
            existing = walk.live_pks(found_model, pks)
            if existing:
                report.conflicts[_label(found_model)] = _sorted(existing)
            missing = _sorted(pks - existing)
            if missing:
                to_insert[found_model] = missing
        for found_model, pks in to_insert.items():
            inserter.check_unique(found_model, pks)
        try:
            for found_model in _insert_order(to_insert):
                inserted = inserter.insert(found_model, to_insert[found_model])
                report.inserted[_label(found_model)] = to_insert[found_model]
                if inserted != len(to_insert[found_model]):
                    raise RestoreFailed(f"{inserted} of {len(to_insert[found_model])} rows of "
                                        f"{found_model._meta.label} were inserted; nothing was restored.")
                inserter.sequences_forward(found_model)
            cur.execute("SET CONSTRAINTS ALL IMMEDIATE")  # check the foreign keys now, inside this restore
        except (IntegrityError, DatabaseError) as exc:
            raise RestoreFailed(f"The live schema refused the restored rows: {str(exc).strip()}; nothing was "
                                "restored.") from None
        report.parents = {_label(m): _sorted(p) for m, p in walk.parents.items() if p}
