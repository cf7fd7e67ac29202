"""Producers of a tenant's dump: pg_dump (plain or custom) and Django's JSON Lines, streamed into a sink."""

from __future__ import annotations

import datetime
import fcntl
import io
import os
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Protocol

from django.apps import apps
from django.conf import settings
from django.core import serializers
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django_tenants.utils import schema_context

from . import conf, pgtools
from .errors import DumpFailed, SchemaNotFound

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
STDERR_TAIL = 16 * 1024


class ByteSink(Protocol):
    """Where dump bytes go (see backups.sink.BackupSink)."""

    def write(self, data: bytes) -> None: ...


@dataclass
class DumpInfo:
    """What the manifest records about the dumped schema, taken from the dump's own snapshot."""

    server_version: str
    tool: str
    tool_version: str
    row_counts: dict[str, int] = field(default_factory=dict)
    migrations: dict[str, list[str]] = field(default_factory=dict)
    extensions: list[dict[str, str]] = field(default_factory=list)


def _schema_tables(cur, schema: str) -> list[str]:
    cur.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY c.relname",
        (schema,),
    )
    return [row[0] for row in cur.fetchall()]


def _migrations(cur, schema: str, tables: list[str]) -> dict[str, list[str]]:
    if "django_migrations" not in tables:
        return {}
    cur.execute(f"SELECT app, name FROM {pgtools.quote_ident(schema)}.django_migrations ORDER BY id")
    applied: dict[str, list[str]] = {}
    for app, name in cur.fetchall():
        applied.setdefault(app, []).append(name)
    return applied


def _extensions(cur) -> list[dict[str, str]]:
    cur.execute(
        "SELECT e.extname, n.nspname, e.extversion FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname <> 'plpgsql' ORDER BY e.extname"
    )
    return [{"name": n, "schema": s, "version": v} for n, s, v in cur.fetchall()]


def _drain_stderr(pipe, tail: bytearray) -> None:
    for chunk in iter(lambda: pipe.read(4096), b""):
        tail.extend(chunk)
        del tail[:-STDERR_TAIL]


def pg_dump_command(bins: pgtools.PgBinaries, schema: str, fmt: str, snapshot: str | None) -> list[str]:
    """pg_dump arguments for one schema: no owner/ACL, strict names, our compression not its own."""
    cmd = [bins.pg_dump, f"--schema={pgtools.quote_ident(schema)}", "--strict-names", "--no-owner", "--no-acl"]
    cmd += ["--format=custom", "--compress=0"] if fmt == "dump" else ["--format=plain"]
    if snapshot:
        cmd.append(f"--snapshot={snapshot}")
    return cmd


def dump_with_pg_dump(schema: str, fmt: str, sink: ByteSink) -> DumpInfo:
    """Stream `pg_dump -n schema` into `sink`; row counts come from the same exported snapshot."""
    bins = pgtools.binaries()
    read_size = conf.get("BACKUPS_READ_SIZE")
    with pgtools.connect() as conn, conn.cursor() as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cur.execute("SELECT pg_export_snapshot(), current_setting('server_version')")
        snapshot, server_version = cur.fetchone()
        cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        if cur.fetchone() is None:
            raise SchemaNotFound(f"Schema {schema!r} does not exist in the database.")
        tables = _schema_tables(cur, schema)
        info = DumpInfo(server_version, "pg_dump", bins.version,
                        migrations=_migrations(cur, schema, tables), extensions=_extensions(cur))

        proc = subprocess.Popen(pg_dump_command(bins, schema, fmt, snapshot), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=pgtools.pg_dump_env(), bufsize=0)
        try:
            try:
                fcntl.fcntl(proc.stdout.fileno(), F_SETPIPE_SZ, conf.get("BACKUPS_PIPE_SIZE"))
            except OSError:
                pass  # above /proc/sys/fs/pipe-max-size: keep the default
            err_tail = bytearray()
            err_thread = threading.Thread(target=_drain_stderr, args=(proc.stderr, err_tail), daemon=True)
            err_thread.start()
            counter = threading.Thread(target=_count_rows, args=(cur, schema, tables, info.row_counts), daemon=True)
            counter.start()
            fd = proc.stdout.fileno()
            while chunk := os.read(fd, read_size):
                sink.write(chunk)
            returncode = proc.wait()
            err_thread.join()
            counter.join()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if returncode != 0:
        message = err_tail.decode("utf-8", "replace").strip() or "no message"
        raise DumpFailed(f"pg_dump exited with status {returncode}: {message}")
    if len(info.row_counts) != len(tables):
        raise DumpFailed("Counting rows for the manifest failed.")
    return info


def _count_rows(cur, schema: str, tables: list[str], out: dict[str, int]) -> None:
    try:
        for table in tables:
            cur.execute(f"SELECT count(*) FROM {pgtools.quote_ident(schema)}.{pgtools.quote_ident(table)}")
            out[table] = cur.fetchone()[0]
    except Exception:  # noqa: BLE001 - a missing count is reported by the caller
        pass


def json_models() -> list:
    """The tenant apps' models (tables in the tenant's schema), dependencies first.

    Tables only in the public schema (tenants, backup records) never appear; content types and
    permissions are left out because migrating the target schema recreates them.
    """
    exclude = set(conf.get("BACKUPS_JSON_EXCLUDE"))
    by_name = {config.name: config for config in apps.get_app_configs()}
    app_list = []
    for app_name in settings.TENANT_APPS:
        config = by_name[app_name]
        models = [m for m in config.get_models() if m._meta.label_lower not in exclude and not m._meta.proxy]
        if models:
            app_list.append((config, models))
    return serializers.sort_dependencies(app_list, allow_cycles=True)


class ExactJSONEncoder(DjangoJSONEncoder):
    """DjangoJSONEncoder keeps milliseconds only; a backup keeps every microsecond."""

    def default(self, o):
        if isinstance(o, (datetime.datetime, datetime.time)):
            return o.isoformat()
        return super().default(o)


class _TextToSink(io.TextIOBase):
    """Buffers the serializer's text and hands it to the byte sink in large UTF-8 chunks."""

    def __init__(self, sink: ByteSink, flush_at: int = 1 << 20) -> None:
        self.sink, self.flush_at = sink, flush_at
        self.parts: list[str] = []
        self.pending = 0

    def write(self, text: str) -> int:
        self.parts.append(text)
        self.pending += len(text)
        if self.pending >= self.flush_at:
            self.flush()
        return len(text)

    def flush(self) -> None:
        if self.parts:
            self.sink.write("".join(self.parts).encode("utf-8"))
            self.parts, self.pending = [], 0


def dump_with_django(schema: str, sink: ByteSink) -> DumpInfo:
    """Django JSON Lines of the tenant apps' models, in one repeatable-read transaction of the schema."""
    with connection.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        if cur.fetchone() is None:
            raise SchemaNotFound(f"Schema {schema!r} does not exist in the database.")
    models = json_models()
    with schema_context(schema):
        with connection.cursor() as cur:
            cur.execute("SELECT 1")  # lets django-tenants set search_path before the transaction starts
        with transaction.atomic():
            with connection.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cur.execute("SELECT current_setting('server_version')")
                server_version = cur.fetchone()[0]
                tables = _schema_tables(cur, schema)
                info = DumpInfo(server_version, "django", _django_version(),
                                migrations=_migrations(cur, schema, tables), extensions=_extensions(cur))
            for model in models:
                info.row_counts[model._meta.db_table] = model._default_manager.count()
            text = _TextToSink(sink)
            for model in models:
                queryset = model._default_manager.order_by(model._meta.pk.name).iterator(chunk_size=2000)
                serializers.serialize("jsonl", queryset, stream=text, use_natural_foreign_keys=True,
                                      cls=ExactJSONEncoder)
            text.flush()
    return info


def _django_version() -> str:
    import django

    return django.get_version()
