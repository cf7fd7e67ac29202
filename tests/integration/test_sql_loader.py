"""The script loader: what pg_dump writes loads through psycopg in any chunking; nothing else is interpreted."""

from __future__ import annotations

import subprocess

import pytest

from backups.core.errors import RestoreFailed
from backups.postgres import pgtools
from backups.postgres.sql_loader import ScriptCutShort, ScriptLoader, UnsafeSql, load_script

SCRIPT = b"""--
-- PostgreSQL database dump
--
\\restrict 3kq0ZPpXGzYbq1Vf8cNnO4s
SET statement_timeout = 0;
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
CREATE SCHEMA tb_loader;
CREATE FUNCTION tb_loader.f() RETURNS text LANGUAGE plpgsql AS $_$ BEGIN RETURN '\\! not a command; really'; END $_$;
CREATE FUNCTION tb_loader.g() RETURNS text LANGUAGE sql AS $$ SELECT 'multi;
\\! still inside the dollar quote
' $$;
CREATE FUNCTION tb_loader.h(a integer) RETURNS integer LANGUAGE sql
BEGIN ATOMIC
 SELECT CASE WHEN a > 0 THEN a ELSE 0 END;
 SELECT (a + 1);
END;
CREATE TABLE tb_loader."Order Lines" (id integer, note text DEFAULT E'tab\\t and quote \\' still; inside');
COMMENT ON TABLE tb_loader."Order Lines" IS 'backslash \\ inside a standard string; and ''quotes''';
/* a comment with \\! in it /* nested; */ still comment; */
CREATE TABLE tb_loader."we\\ird;" (a$b int, "x\\" int);
CREATE RULE r AS ON INSERT TO tb_loader."we\\ird;" DO ALSO (SELECT 1; SELECT 2);
-- a line comment; with \\! in it
COPY tb_loader."Order Lines" (id, note) FROM stdin;
1\t\\N
2\ta backslash \\\\ and \\\\! in data; \\\\. not the end
\\.

COPY tb_loader."we\\ird;" (a$b, "x\\") FROM stdin;
\\.

SELECT 'done; really' WHERE true;
\\unrestrict 3kq0ZPpXGzYbq1Vf8cNnO4s
"""


@pytest.fixture
def conn():
    with pgtools.connect() as connection:
        yield connection
        connection.rollback()


def _state(conn) -> tuple:
    rows = conn.execute('SELECT id, note FROM tb_loader."Order Lines" ORDER BY id').fetchall()
    funcs = conn.execute("SELECT tb_loader.f(), tb_loader.g(), tb_loader.h(3)").fetchone()
    empty = conn.execute('SELECT count(*) FROM tb_loader."we\\ird;"').fetchone()[0]
    return rows, funcs, empty


def _chunked(data: bytes, size: int):
    return (data[i:i + size] for i in range(0, len(data), size))


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, 1 << 20])
def test_what_pg_dump_writes_loads_the_same_in_any_chunking(conn, size):
    stats = load_script(conn, _chunked(SCRIPT, size))
    assert _state(conn) == (
        [(1, None), (2, "a backslash \\ and \\! in data; \\. not the end")],
        ("\\! not a command; really", "multi;\n\\! still inside the dollar quote\n", 4),
        0,
    )
    assert stats.copies == 2


@pytest.mark.parametrize("bad", [
    b"\\! id",
    b"SELECT 1; \\! id",
    b"\\o |id",
    b"\\copy t to program 'id'",
    b"\\connect other",
    b"\\restrict key; \\! id",
    b"SELECT 'closed' \\gexec",
    b"SELECT E'a\\\\' \\! id",  # the E-string ends after an escaped backslash
    b"SELECT $$ x $$ \\! id",
    b"/* c */ \\! id",
    b"SET standard_conforming_strings = off;",
    b"SELECT pg_catalog.set_config('standard_conforming_strings', 'off', false);",
    b"SET client_encoding = 'SJIS';",
    b"COPY t FROM stdin; \\! id",
    b"COPY tb_loader.t FROM PROGRAM 'id';",
    b"COPY (SELECT 1) TO '/tmp/x';",
])
def test_anything_pg_dump_never_writes_is_refused_and_nothing_is_loaded(conn, bad):
    head = SCRIPT.split(b"COPY")[0]
    with pytest.raises(UnsafeSql, match="refused"):
        load_script(conn, [head, bad + b"\n"])
    conn.rollback()
    assert conn.execute("SELECT to_regnamespace('tb_loader')").fetchone()[0] is None


@pytest.mark.parametrize("cut", [b"2\ta backs", b"still inside the dollar", b"CREATE TABLE tb_loader.\"we", b"'quotes"])
def test_a_script_that_ends_early_raises(conn, cut):
    with pytest.raises(ScriptCutShort, match="cut short"):
        load_script(conn, [SCRIPT[:SCRIPT.index(cut) + len(cut) // 2]])


def test_the_loader_never_commits(conn):
    load_script(conn, [SCRIPT])
    conn.rollback()
    assert conn.execute("SELECT to_regnamespace('tb_loader')").fetchone()[0] is None


def test_a_server_error_names_the_reason(conn):
    with pytest.raises(RestoreFailed, match='relation "tb_loader.missing" does not exist'):
        load_script(conn, [SCRIPT.split(b"COPY")[0] + b"COPY tb_loader.missing (a) FROM stdin;\n1\n\\.\n"])


def test_bad_copy_data_is_refused_with_the_servers_message(conn):
    script = SCRIPT.replace(b"1\t\\N", b"one\t\\N")
    with pytest.raises(RestoreFailed, match="invalid input syntax for type integer"):
        load_script(conn, [script])


def test_a_real_dump_loads_like_psql(conn):
    """pg_dump of a demo tenant, renamed: the loader gives the same rows as the live schema."""
    bins = pgtools.binaries()
    dump = subprocess.run([bins.pg_dump, "--schema=clinica_demo", "--no-owner", "--no-acl"], capture_output=True,
                          env=pgtools.pg_dump_env(), check=True).stdout
    conn.execute("ALTER SCHEMA clinica_demo RENAME TO tb_loader_live")
    loader = ScriptLoader(conn, batch_bytes=4096)
    for chunk in _chunked(dump, 4093):
        loader.feed(chunk)
    loader.finish()
    tables = [r[0] for r in conn.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = 'clinica_demo'::regnamespace AND relkind = 'r'")]
    assert len(tables) > 5
    for table in tables:
        mine = conn.execute(f'SELECT md5(string_agg(t::text, \',\' ORDER BY t::text)) FROM clinica_demo."{table}" t')
        live = conn.execute(f'SELECT md5(string_agg(t::text, \',\' ORDER BY t::text)) FROM tb_loader_live."{table}" t')
        assert mine.fetchone() == live.fetchone(), table
