"""The psql meta-command guard: what pg_dump writes passes, anything psql would run as a command is refused."""

import pytest

from backups.psql_guard import UnsafeSql, scan_sql_lines

PG_DUMP_LIKE = b"""--
-- PostgreSQL database dump
--
\\restrict 3kq0ZPpXGzYbq1Vf8cNnO4s
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
CREATE FUNCTION s.f() RETURNS text LANGUAGE plpgsql AS $_$ BEGIN RETURN '\\! not a command'; END $_$;
CREATE FUNCTION s.g() RETURNS text LANGUAGE sql AS $$ SELECT 'multi
\\! still inside the dollar quote
' $$;
COMMENT ON TABLE s."Order Lines" IS 'backslash \\ inside a standard string';
ALTER TABLE s.t ALTER COLUMN c SET DEFAULT E'tab\\t and quote \\' still inside';
/* a comment with \\! in it /* nested */ still comment */
CREATE TABLE s."we\\ird" (a$b int, "x\\" int);
COPY s."Order Lines" (id, note) FROM stdin;
1\t\\N
2\ta backslash \\\\ and \\! in data
\\.
SELECT setval('s.seq', 3, true);
\\unrestrict 3kq0ZPpXGzYbq1Vf8cNnO4s
"""


def test_what_pg_dump_writes_passes():
    assert scan_sql_lines(PG_DUMP_LIKE.split(b"\n")) > 20


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
    b"COPY t FROM stdin; \\! id",
])
def test_a_meta_command_anywhere_psql_would_run_it_is_refused(bad):
    with pytest.raises(UnsafeSql, match="refused before anything ran"):
        scan_sql_lines(PG_DUMP_LIKE.split(b"\n")[:8] + [bad])


def test_sql_cut_inside_copy_data_is_refused():
    with pytest.raises(UnsafeSql, match="ends inside copy"):
        scan_sql_lines([b"COPY t (a) FROM stdin;", b"1"])
