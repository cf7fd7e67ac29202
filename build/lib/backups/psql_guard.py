"""Defence in depth for plain SQL handed to psql: no psql meta-command but the ones pg_dump writes.

psql runs `\\!`, `\\o |cmd`, `\\copy ... program` and friends the moment it reads them, and no transaction rolls
that back. The digest check (backups.reading) already refuses bytes this deployment did not make; this scan
refuses, before psql starts, any SQL that carries a meta-command other than pg_dump's own `\\restrict` /
`\\unrestrict` lines and the `\\.` that ends COPY data. It follows psql's lexer (psqlscan.l) where a
backslash is not a meta-command: inside quoted strings, quoted identifiers, dollar quotes, comments and
COPY data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .errors import RestoreFailed

_CODE = re.compile(rb"""['"$\\;]|--|/\*""")
_ESTRING = re.compile(rb"[\\']")
_COMMENT = re.compile(rb"/\*|\*/")
_DOLLAR_TAG = re.compile(rb"\$([A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)?\$")
_RESTRICT = re.compile(rb"\\(?:un)?restrict [A-Za-z0-9]+")
_COPY_FROM_STDIN = re.compile(rb"\s*COPY\s.*\sFROM\s+stdin\s*", re.IGNORECASE | re.DOTALL)
_SCS_OFF = re.compile(rb"\s*SET\s+standard_conforming_strings\s*(?:=|TO)\s*'?off'?\s*", re.IGNORECASE)
_IDENT_BYTES = (frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_$")
                | frozenset(range(128, 256)))
STATEMENT_KEEP = 1 << 16  # enough of a statement to tell COPY ... FROM stdin


class UnsafeSql(RestoreFailed):
    """The SQL carries a psql meta-command pg_dump never writes; nothing of it was run."""


class SqlScanner:
    """Feed it the SQL line by line (without newlines); it raises UnsafeSql at the first foreign meta-command."""

    def __init__(self) -> None:
        self.state = "code"  # code, squote, estring, dquote, dollar, comment, copy
        self.dollar_tag = b""
        self.depth = 0
        self.statement = bytearray()
        self.lineno = 0

    def _refuse(self, why: str) -> None:
        raise UnsafeSql(f"The backup's SQL was refused before anything ran: line {self.lineno} {why}.")

    def feed_line(self, line: bytes) -> None:
        """Scan one line."""
        self.lineno += 1
        if self.state == "copy":
            if line.rstrip(b"\r") == b"\\.":
                self.state = "code"
            return
        if self.state == "code" and line.startswith(b"\\"):
            if not _RESTRICT.fullmatch(line.rstrip(b"\r")):
                self._refuse(f"holds the psql meta-command {line[:40]!r}")
            return
        pos, end = 0, len(line)
        while pos < end:
            pos = self._step(line, pos)
        if self.state == "code":
            self._keep(b"\n")

    def _keep(self, text: bytes) -> None:
        if len(self.statement) < STATEMENT_KEEP:
            self.statement += text[: STATEMENT_KEEP - len(self.statement)]

    def _step(self, line: bytes, pos: int) -> int:
        state = self.state
        if state == "code":
            return self._code(line, pos)
        if state in ("squote", "estring"):
            pattern = _ESTRING if state == "estring" else None
            while True:
                hit = pattern.search(line, pos) if pattern else _find(line, b"'", pos)
                if hit is None:
                    return len(line)
                at = hit.start() if pattern else hit
                if line[at:at + 1] == b"\\":
                    pos = at + 2
                    continue
                if line[at + 1:at + 2] == b"'":
                    pos = at + 2
                    continue
                self.state = "code"
                self._keep(b"''")
                return at + 1
        if state == "dquote":
            at = line.find(b'"', pos)
            if at < 0:
                return len(line)
            self.state = "code"
            self._keep(b'""')
            return at + 1
        if state == "dollar":
            tag = b"$" + self.dollar_tag + b"$"
            at = line.find(tag, pos)
            if at < 0:
                return len(line)
            self.state = "code"
            self._keep(b"''")
            return at + len(tag)
        # comment
        while True:
            hit = _COMMENT.search(line, pos)
            if hit is None:
                return len(line)
            self.depth += 1 if hit.group() == b"/*" else -1
            pos = hit.end()
            if self.depth == 0:
                self.state = "code"
                return pos

    def _code(self, line: bytes, pos: int) -> int:
        hit = _CODE.search(line, pos)
        if hit is None:
            self._keep(line[pos:])
            return len(line)
        at, token = hit.start(), hit.group()
        self._keep(line[pos:at])
        if token == b"\\":
            self._refuse(f"holds the psql meta-command {line[at:at + 40]!r}")
        if token == b"--":
            return len(line)
        if token == b"/*":
            self.state, self.depth = "comment", 1
            return at + 2
        if token == b"'":
            prefix = line[at - 1:at] if at else b""
            before = line[at - 2:at - 1] if at >= 2 else b""
            escape = prefix in (b"E", b"e") and (not before or before[0] not in _IDENT_BYTES)
            self.state = "estring" if escape else "squote"
            return at + 1
        if token == b'"':
            self.state = "dquote"
            return at + 1
        if token == b"$":
            if at and line[at - 1] in _IDENT_BYTES:
                self._keep(b"$")
                return at + 1  # part of an identifier (a$b) or a parameter ($1) follows
            tag = _DOLLAR_TAG.match(line, at)
            if tag is None:
                self._keep(b"$")
                return at + 1
            self.state, self.dollar_tag = "dollar", tag.group(1) or b""
            return tag.end()
        # ';' ends a statement
        statement = bytes(self.statement)
        self.statement.clear()
        if _SCS_OFF.fullmatch(statement):
            self._refuse("turns standard_conforming_strings off, which pg_dump never does")
        if _COPY_FROM_STDIN.fullmatch(statement):
            if line[at + 1:].strip():
                self._refuse("has more after COPY ... FROM stdin;")
            self.state = "copy"
            return len(line)
        return at + 1

    def finish(self) -> None:
        """The input ended: COPY data or a string left open is not what pg_dump writes."""
        if self.state not in ("code",):
            self._refuse(f"ends inside {self.state} (the SQL is cut short)")


def _find(line: bytes, needle: bytes, pos: int) -> int | None:
    at = line.find(needle, pos)
    return None if at < 0 else at


def scan_sql_lines(lines: Iterable[bytes]) -> int:
    """Scan the whole SQL; returns the number of lines, raises UnsafeSql at the first foreign meta-command."""
    scanner = SqlScanner()
    for line in lines:
        scanner.feed_line(line)
    scanner.finish()
    return scanner.lineno
