"""Load a pg_dump script into PostgreSQL through psycopg: no psql, so nothing in the script is ever interpreted.

Why not `psql -1`: psql runs meta-commands (`\\!`, `\\o |cmd`, `\\copy ... program`) the moment it reads them,
and no scanner of ours can mirror every way its lexer ends a line; and psql reading a pipe COMMITS at end of
input, so a parent killed mid-load (OOM killer, hard time limit) published half a schema. This loader splits
the script by psql's own lexing rules (quotes, E-strings, dollar quotes, nested comments, parentheses,
`BEGIN ATOMIC` bodies), sends the statements to the server in batches and streams COPY data through the COPY
protocol. A backslash command is refused, never run; a script that ends early (inside COPY data, a string or a
statement) raises. The caller's transaction commits only after the whole script arrived and its checks passed,
and a connection that dies with its process is rolled back by the server.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg

from backups.core.errors import RestoreFailed

_TOKEN = re.compile(rb"""['"$\\;()]|--|/\*""")
_ESTRING = re.compile(rb"[\\']")
_COMMENT = re.compile(rb"/\*|\*/")
_DOLLAR_TAG = re.compile(rb"\$([A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)?\$")
_DOLLAR_START = re.compile(rb"\$[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*")
_RESTRICT = re.compile(rb"\\(?:un)?restrict [A-Za-z0-9]+\r?")
_COPY_FROM_STDIN = re.compile(rb"\s*COPY\s.*\sFROM\s+stdin\s*;", re.IGNORECASE | re.DOTALL)
_COPY = re.compile(rb"\s*COPY\b", re.IGNORECASE)
_ROUTINE = re.compile(rb"\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|PROCEDURE)\b", re.IGNORECASE)
_WORD = re.compile(rb"[A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*|[()]")
_SCS = re.compile(rb"standard_conforming_strings", re.IGNORECASE)
_SCS_ON = re.compile(rb"\s*SET\s+standard_conforming_strings\s*(?:=|TO)\s*'?on'?\s*;", re.IGNORECASE)
# Client-only encodings whose multibyte characters may hold the bytes of a quote or a backslash: the server would
# split such a script where this lexer does not. pg_dump writes the database's encoding, never one of these.
_UNSAFE_ENCODING = re.compile(rb"client_encoding.*(?:SJIS|SHIFT_JIS|BIG5|GBK|UHC|GB18030|JOHAB)", re.IGNORECASE)
_IDENT_BYTES = (frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_$")
                | frozenset(range(128, 256)))
_COPY_END = b"\n\\.\n"
BATCH_BYTES = 256 * 1024  # statements sent in one round trip (the server runs them in order, in the same transaction)


class UnsafeSql(RestoreFailed):
    """The script holds something pg_dump never writes (a psql meta-command, a COPY from elsewhere); nothing ran."""


class ScriptCutShort(RestoreFailed):
    """The script ended inside a statement, a string or COPY data: it never arrived whole."""


@dataclass
class LoadStats:
    """What a load sent: statements, COPY blocks and their data bytes."""

    statements: int = 0
    copies: int = 0
    copy_bytes: int = 0


class ScriptLoader:
    """Feed it the script's bytes in chunks of any size, then call finish(); statements run as they complete.

    It sends to `conn` and never commits: the transaction is the caller's.
    """

    def __init__(self, conn: psycopg.Connection, *, batch_bytes: int = BATCH_BYTES) -> None:
        self.cur = conn.cursor()
        self.batch_bytes = batch_bytes
        self.batch = bytearray()
        self.stats = LoadStats()
        self.buf = b""
        self.start = 0  # code: where the current statement starts; copy: one byte already sent, then unsent data
        self.pos = 0
        self.state = "code"  # code, squote, estring, dquote, dollar, comment, line_comment, copy
        self.code = bytearray()  # the statement outside quotes and comments
        self.parens = 0
        self.comment_depth = 0
        self.dollar_tag = b""
        self.copy_cm = None
        self.copy = None
        self.copy_statement = b""

    # --- input -----------------------------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes of the script; run what they complete."""
        if self.start < len(self.buf):
            self.buf = self.buf[self.start:] + chunk
            self.pos -= self.start
        else:
            self.buf, self.pos = bytes(chunk), 0
        self.start = 0
        self._run(eof=False)

    def finish(self) -> LoadStats:
        """The script ended: run what is left; raise ScriptCutShort if it ended inside anything."""
        self._run(eof=True)
        if self.state == "copy":
            self._abort_copy()
            raise ScriptCutShort(f"The script ends inside the COPY data of {self._name(self.copy_statement)}: it is "
                                 "cut short; nothing was restored.")
        if self.state not in ("code", "line_comment") or self.code.strip():
            raise ScriptCutShort(f"The script ends inside a statement ({self.state}): it is cut short; nothing was "
                                 "restored.")
        self._flush()
        return self.stats

    def load(self, chunks: Iterable[bytes]) -> LoadStats:
        """Feed every chunk, then finish."""
        try:
            for chunk in chunks:
                self.feed(chunk)
            return self.finish()
        except BaseException:
            self._abort_copy()
            raise

    # --- the scan ----------------------------------------------------------------------------------------------

    def _run(self, *, eof: bool) -> None:
        while self._copy_step(eof) if self.state == "copy" else self._code_step(eof):
            pass

    def _copy_step(self, eof: bool) -> bool:
        buf, start = self.buf, self.start
        end = buf.find(_COPY_END, start)
        if end < 0 and eof and buf.endswith(b"\n\\.") and len(buf) - 3 >= start:
            end = len(buf) - 3
        view = memoryview(buf)
        if end >= 0:
            self._copy_write(view[start + 1:end + 1])
            self._end_copy()
            self.start = self.pos = min(end + 4, len(buf))
            self.state = "code"
            return True
        if len(buf) - start > 4:
            self._copy_write(view[start + 1:len(buf) - 3])
            self.start = self.pos = len(buf) - 4
        return False

    def _code_step(self, eof: bool) -> bool:
        """Scan on from self.pos; True to go on (the buffer changed), False when more input is needed."""
        buf, pos, state = self.buf, self.pos, self.state
        if state == "code":
            hit = _TOKEN.search(buf, pos)
            if hit is None:
                end = len(buf) - 1 if not eof and buf[-1:] in (b"-", b"/") else len(buf)  # `--`, `/*` may go on
                self.code += buf[pos:end]
                self.pos = max(pos, end)
                return False
            at, token = hit.start(), hit.group()
            self.code += buf[pos:at]
            return self._token(buf, at, token, eof)
        if state in ("squote", "estring"):
            return self._quoted(buf, pos, state == "estring", eof)
        if state == "dquote":
            at = buf.find(b'"', pos)
            if at < 0 or (at + 1 == len(buf) and not eof):
                self.pos = len(buf) if at < 0 else at
                return False
            if buf[at + 1:at + 2] == b'"':
                self.pos = at + 2
                return True
            return self._back_to_code(at + 1, b'""')
        if state == "dollar":
            tag = b"$" + self.dollar_tag + b"$"
            at = buf.find(tag, pos)
            if at < 0:
                self.pos = max(pos, len(buf) - len(tag))
                return False
            return self._back_to_code(at + len(tag), b"''")
        if state == "line_comment":
            at = buf.find(b"\n", pos)
            if at < 0:
                self.pos = len(buf)
                return False
            return self._back_to_code(at + 1, b"\n")
        while True:  # comment
            hit = _COMMENT.search(buf, pos)
            if hit is None:
                self.pos = max(pos, len(buf) - 1)
                return False
            self.comment_depth += 1 if hit.group() == b"/*" else -1
            pos = hit.end()
            if self.comment_depth == 0:
                return self._back_to_code(pos, b" ")

    def _back_to_code(self, pos: int, stand_in: bytes) -> bool:
        self.state, self.pos = "code", pos
        self.code += stand_in
        return True

    def _quoted(self, buf: bytes, pos: int, escapes: bool, eof: bool) -> bool:
        while True:
            if escapes:
                hit = _ESTRING.search(buf, pos)
                at = -1 if hit is None else hit.start()
            else:
                at = buf.find(b"'", pos)
            if at < 0:
                self.pos = len(buf)
                return False
            if at + 1 == len(buf) and not eof:
                self.pos = at  # a backslash's or a quote's next byte decides
                return False
            if buf[at] == 0x5C or buf[at + 1:at + 2] == b"'":  # an escape, or a doubled quote
                pos = at + 2
                continue
            return self._back_to_code(at + 1, b"''")

    def _token(self, buf: bytes, at: int, token: bytes, eof: bool) -> bool:
        if token == b"--":
            self.state, self.pos = "line_comment", at + 2
            return True
        if token == b"/*":
            self.state, self.comment_depth, self.pos = "comment", 1, at + 2
            return True
        if token == b"'":
            before = buf[at - 1:at] if at else b""
            earlier = buf[at - 2:at - 1] if at >= 2 else b""
            escapes = before in (b"E", b"e") and (not earlier or earlier[0] not in _IDENT_BYTES)
            self.state, self.pos = ("estring" if escapes else "squote"), at + 1
            return True
        if token == b'"':
            self.state, self.pos = "dquote", at + 1
            return True
        if token == b"$":
            return self._dollar(buf, at, eof)
        if token == b"(":
            self.parens += 1
        elif token == b")":
            self.parens = max(0, self.parens - 1)
        elif token == b"\\":
            return self._backslash(buf, at, eof)
        elif token == b";" and self.parens == 0 and not self._inside_atomic_body():
            return self._statement_end(buf, at, eof)
        self.code += token
        self.pos = at + 1
        return True

    def _dollar(self, buf: bytes, at: int, eof: bool) -> bool:
        if at and buf[at - 1] in _IDENT_BYTES:  # part of an identifier (a$b) or a parameter ($1)
            self.code += b"$"
            self.pos = at + 1
            return True
        tag = _DOLLAR_TAG.match(buf, at)
        if tag is None:
            start = _DOLLAR_START.match(buf, at)
            if not eof and (at + 1 == len(buf) or (start and start.end() == len(buf))):
                self.pos = at  # the tag may go on in the next chunk
                return False
            self.code += b"$"
            self.pos = at + 1
            return True
        self.state, self.dollar_tag, self.pos = "dollar", tag.group(1) or b"", tag.end()
        return True

    def _backslash(self, buf: bytes, at: int, eof: bool) -> bool:
        """pg_dump's own `\\restrict KEY` / `\\unrestrict KEY` lines are skipped; any other backslash is refused."""
        line_end = buf.find(b"\n", at)
        if line_end < 0 and not eof:
            self.pos = at
            return False
        line = buf[at:line_end if line_end >= 0 else len(buf)]
        if self.code.strip() or not _RESTRICT.fullmatch(line):
            raise UnsafeSql(f"The backup's SQL was refused: it holds the psql meta-command {line[:40]!r}, which "
                            "pg_dump never writes; nothing of it was restored.")
        self.start = self.pos = line_end + 1 if line_end >= 0 else len(buf)
        self.code.clear()
        return True

    def _inside_atomic_body(self) -> bool:
        """psql's rule: in CREATE [OR REPLACE] FUNCTION|PROCEDURE, a `;` between BEGIN and END ends nothing."""
        if not _ROUTINE.match(self.code):
            return False
        depth = parens = 0
        for word in _WORD.finditer(self.code):
            text = word.group().lower()
            if text == b"(":
                parens += 1
            elif text == b")":
                parens = max(0, parens - 1)
            elif parens == 0 and text == b"begin":
                depth += 1
            elif parens == 0 and text == b"case" and depth >= 1:
                depth += 1
            elif parens == 0 and text == b"end" and depth > 0:
                depth -= 1
        return depth > 0

    def _statement_end(self, buf: bytes, at: int, eof: bool) -> bool:
        statement, code = buf[self.start:at + 1], bytes(self.code) + b";"
        if _COPY.match(code):
            if not _COPY_FROM_STDIN.fullmatch(code):
                raise UnsafeSql(f"The backup's SQL was refused: {self._name(statement)} does not read its data from "
                                "the script, as pg_dump's COPY always does; nothing of it was restored.")
            line_end = buf.find(b"\n", at)
            if line_end < 0 and not eof:
                self.pos = at
                return False
            if line_end < 0 or buf[at + 1:line_end].strip():
                raise UnsafeSql(f"The backup's SQL was refused: {self._name(statement)} is not followed by its data "
                                "on the next line; nothing of it was restored.")
            self._start_copy(statement)
            self.start = self.pos = line_end
            self.state = "copy"
            self.code.clear()
            return True
        if _SCS.search(statement) and not _SCS_ON.fullmatch(statement):
            raise UnsafeSql("The backup's SQL was refused: it changes standard_conforming_strings, which pg_dump "
                            "only ever sets on; nothing of it was restored.")
        if _UNSAFE_ENCODING.search(statement):
            raise UnsafeSql("The backup's SQL was refused: it sets a client encoding pg_dump never writes; nothing "
                            "of it was restored.")
        if code.strip(b" \t\r\n;"):
            self.batch += statement + b"\n"
            self.stats.statements += 1
            if len(self.batch) >= self.batch_bytes:
                self._flush()
        self.start = self.pos = at + 1
        self.code.clear()
        return True

    # --- the server ------------------------------------------------------------------------------------------

    def _flush(self) -> None:
        if not self.batch:
            return
        sql, self.batch = bytes(self.batch), bytearray()
        try:
            self.cur.execute(sql)
        except psycopg.Error as exc:
            raise RestoreFailed(f"The server refused the backup's SQL: {_server_message(exc)}") from None

    def _start_copy(self, statement: bytes) -> None:
        self._flush()
        self.copy_statement = statement
        try:
            self.copy_cm = self.cur.copy(statement)
            self.copy = self.copy_cm.__enter__()
        except psycopg.Error as exc:
            self.copy_cm = self.copy = None
            raise RestoreFailed(f"The server refused {self._name(statement)}: {_server_message(exc)}") from None
        self.stats.copies += 1

    def _copy_write(self, data: bytes) -> None:
        if not data:
            return
        self.stats.copy_bytes += len(data)
        try:
            self.copy.write(data)
        except psycopg.Error as exc:
            self._abort_copy()
            raise RestoreFailed(f"The server refused the data of {self._name(self.copy_statement)}: "
                                f"{_server_message(exc)}") from None

    def _end_copy(self) -> None:
        cm, self.copy_cm, self.copy = self.copy_cm, None, None
        try:
            cm.__exit__(None, None, None)
        except psycopg.Error as exc:
            raise RestoreFailed(f"The server refused the data of {self._name(self.copy_statement)}: "
                                f"{_server_message(exc)}") from None

    def _abort_copy(self) -> None:
        cm, self.copy_cm, self.copy = self.copy_cm, None, None
        if cm is not None:
            try:
                cm.__exit__(RestoreFailed, RestoreFailed("load aborted"), None)
            except Exception:  # noqa: BLE001 - the copy is being abandoned; the caller's error is the one to report
                pass

    @staticmethod
    def _name(statement: bytes) -> str:
        return statement.strip()[:120].decode("utf-8", "replace")


def _server_message(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    lines = str(exc).strip().splitlines()
    text = (diag.message_primary if diag is not None else None) or (lines[0] if lines else type(exc).__name__)
    detail = diag.message_detail if diag is not None else None
    return f"{text} ({detail})" if detail else text


def load_script(conn: psycopg.Connection, chunks: Iterable[bytes]) -> LoadStats:
    """Send a whole pg_dump script to `conn` inside the caller's transaction; raises before anything commits."""
    return ScriptLoader(conn).load(chunks)
