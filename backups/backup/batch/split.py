"""Split one custom-format pg_dump of many schemas into one custom-format archive per schema.

pg_dump reads the whole database's catalog on every call, so a tenant dumped alone costs O(tenants). One
`pg_dump -Fc -Z0 -f FILE -n s1 ... -n sK` pays that once for K tenants; written to a file, the archive's table of
contents holds every table's data offset. This module reads that table of contents ONCE, assigns every entry to
its schema, and writes each schema's entries and data blocks (copied as they are, streamed) as a custom-format
archive: the bytes `pg_dump -Fc -Z0 -n <schema>` writes to a pipe, so `pg_restore` reads it exactly like one made
alone (and turns it into the plain SQL of an `sql` backup). Row counts and applied migrations come from the data
blocks themselves, i.e. from the dump's own snapshot. (One file, not a directory archive: a directory of one file
per table costs a file creation per table, which at 16,000 tables a batch was a quarter of pg_dump's time here.)

Only what is needed is kept in memory: per entry its kind, tag, schema and byte span in the table of contents, never
its SQL. Archive versions 1.14 to 1.16 (pg_dump 15 to 18) are understood; anything else raises
SplitUnsupported, and the caller dumps those tenants one by one.
"""

from __future__ import annotations

import os
import re
import secrets
import string
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from backups.core.errors import BackupError

MAGIC = b"PGDMP"
FORMAT_CUSTOM = 1
K_OFFSET_POS_NOT_SET, K_OFFSET_POS_SET, K_OFFSET_NO_DATA = 1, 2, 3
BLK_DATA = 1
SUPPORTED_VERSIONS = {(1, 14), (1, 15), (1, 16)}
SHARED_DESCS = {"ENCODING", "STDSTRINGS", "SEARCHPATH", "DATABASE", "DATABASE PROPERTIES"}  # in every archive
CHUNK = 1 << 20
# Entry kinds whose plain SQL pg_restore writes the generic way (comment, definition, COPY data: no second pass,
# no special case), so write_sql can write them. Not here: ACLs, matview data and event triggers (later passes),
# large objects, DATABASE (only with --create).
SQL_DESCS = {"SCHEMA", "TABLE", "SEQUENCE", "SEQUENCE OWNED BY", "DEFAULT", "TABLE DATA", "SEQUENCE SET",
             "CONSTRAINT", "FK CONSTRAINT", "CHECK CONSTRAINT", "INDEX", "INDEX ATTACH", "COMMENT", "VIEW",
             "TRIGGER", "FUNCTION", "PROCEDURE", "AGGREGATE", "TYPE", "DOMAIN", "RULE", "POLICY", "ROW SECURITY",
             "MATERIALIZED VIEW", "STATISTICS", "COLLATION"}
RESTRICT_CHARS = string.ascii_letters + string.digits
_RESTRICT_KEY = re.compile(r"[A-Za-z0-9]+")
_SESSION_DEFN = {"SCHEMA": re.compile(rb"CREATE SCHEMA [^\n]+;\n"),
                 "ENCODING": re.compile(rb"SET client_encoding = '[^'\n]*';\n"),
                 "STDSTRINGS": re.compile(rb"SET standard_conforming_strings = '(on|off)';\n")}
COPY_END = b"\\.\n\n\n"
_COPY_COLUMNS = re.compile(r"\((.*)\)\s+FROM\s+stdin", re.IGNORECASE | re.DOTALL)

Write = Callable[[bytes], None]


class SplitError(BackupError):
    """The batch archive could not be split (damaged, or an entry that belongs to no member)."""


class SplitUnsupported(SplitError):
    """The archive uses a version or feature this splitter does not handle: dump those tenants alone."""


@dataclass(slots=True)
class Entry:
    """One TOC entry: where its bytes are in the archive and what the split needs to know of it."""

    dump_id: int
    desc: str
    tag: str
    namespace: str
    start: int
    common_end: int  # the format's own tail (in a custom archive: the data offset) starts here
    data_offset: int = -1  # where its data block starts in the batch file; -1: no data
    copy_stmt: str = ""  # not kept: read again with BatchArchive.copy_stmt
    deps: tuple[int, ...] = ()
    tablespace: str | None = None  # None: not a tablespace object (pg_restore then leaves default_tablespace)
    tableam: str | None = None
    position: int = -1  # its index in the table of contents


@dataclass
class MemberPart:
    """One schema's share of the batch: its entries in archive order (kept as positions in the archive's table
    of contents; Entry objects are made when asked for, so a batch of thousands of tenants costs a few bytes an
    entry, not a few hundred)."""

    schema: str
    archive: BatchArchive | None = None
    positions: array = field(default_factory=lambda: array("I"))

    @property
    def entries(self) -> list[Entry]:
        return [self.archive.entry(i) for i in self.positions]

    @property
    def data_entries(self) -> list[Entry]:
        blocks = self.archive._blocks
        return [self.archive.entry(i) for i in self.positions if i in blocks]


@dataclass(slots=True)
class _EntryText:
    tag: bytes
    desc: bytes
    defn: bytes
    copy_stmt: bytes
    namespace: bytes


class _Reader:
    """Sequential reads of the table of contents' integers and strings, in the archive's own encoding."""

    def __init__(self, f, int_size: int) -> None:
        self.f, self.int_size = f, int_size

    def byte(self) -> int:
        b = self.f.read(1)
        if not b:
            raise SplitError("The batch archive's table of contents ends early.")
        return b[0]

    def int(self) -> int:
        raw = self.f.read(1 + self.int_size)
        if len(raw) != 1 + self.int_size:
            raise SplitError("The batch archive's table of contents ends early.")
        value = int.from_bytes(raw[1:], "little")
        return -value if raw[0] else value

    def raw_str(self) -> bytes | None:
        n = self.int()
        if n < 0:
            return None
        raw = self.f.read(n)
        if len(raw) != n:
            raise SplitError("The batch archive's table of contents ends early.")
        return raw

    def str(self) -> str | None:
        raw = self.raw_str()
        return None if raw is None else raw.decode("utf-8", "replace")

    def skip_str(self) -> None:
        n = self.int()
        if n > 0:
            self.f.seek(n, os.SEEK_CUR)


class _Codes:
    """A column of strings kept as small integers: an entry's kind, schema, tablespace and access method repeat
    across thousands of entries, so each costs 2 or 4 bytes, not an 8-byte pointer."""

    def __init__(self, typecode: str) -> None:
        self.values: list[str | None] = []
        self._index: dict[str | None, int] = {}
        self.codes = array(typecode)

    def append(self, value: str | None) -> None:
        code = self._index.get(value)
        if code is None:
            code = self._index[value] = len(self.values)
            self.values.append(value)
        self.codes.append(code)

    def __getitem__(self, i: int) -> str | None:
        return self.values[self.codes[i]]


class _Span:
    """Exact reads from one byte range of a file, buffered (a data block's chunks are a row each)."""

    def __init__(self, f, start: int, stop: int, read_size: int) -> None:
        self.f, self.left, self.read_size = f, stop - start, read_size
        self.buf, self.at = b"", 0
        f.seek(start)

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.buf):
            want = max(self.read_size, n) - (len(self.buf) - self.at)
            more = self.f.read(min(want, self.left)) if self.left > 0 else b""
            self.left -= len(more)
            self.buf, self.at = self.buf[self.at:] + more, 0
            if n > len(self.buf):
                raise SplitError("The batch archive's data block ends early.")
        piece = self.buf[self.at:self.at + n]
        self.at += n
        return piece

    def done(self) -> bool:
        return self.left == 0 and self.at == len(self.buf)


def write_int(value: int, int_size: int) -> bytes:
    """An archive integer: a sign byte, then `int_size` little-endian bytes of the magnitude."""
    return bytes([1 if value < 0 else 0]) + abs(value).to_bytes(int_size, "little")


class BatchArchive:
    """A custom-format archive file of several schemas (written to a file, so its data offsets are set), its TOC
    read once."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with self.path.open("rb", buffering=CHUNK) as f:
            size = os.fstat(f.fileno()).st_size
            self._read_header(f)
            self._read_toc(f, size)
            self._block_ends(size)

    def _read_header(self, f) -> None:
        head = f.read(11)
        if len(head) != 11 or head[:5] != MAGIC:
            raise SplitError("The batch archive has no pg_dump header.")
        self.version = (head[5], head[6])
        self.int_size, self.off_size, fmt = head[8], head[9], head[10]
        if self.version not in SUPPORTED_VERSIONS:
            raise SplitUnsupported(f"Archive version {self.version[0]}.{self.version[1]} is not supported by the "
                                   "batch splitter.")
        if not (4 <= self.int_size <= 8 and 4 <= self.off_size <= 8):
            raise SplitError(f"The batch archive's header is damaged (integer size {self.int_size}, offset size "
                             f"{self.off_size}).")
        if fmt != FORMAT_CUSTOM:
            raise SplitError(f"The batch archive has format {fmt}, expected a custom-format archive.")
        r = _Reader(f, self.int_size)
        compression = r.byte() if self.version >= (1, 15) else r.int()
        if compression != 0:
            raise SplitUnsupported("The batch archive is compressed; dump it with -Z0.")
        for _ in range(7):  # creation time
            r.int()
        r.str()  # database name
        self.server_version_bytes, self.tool_version_bytes = r.raw_str() or b"", r.raw_str() or b""
        self.server_version = self.server_version_bytes.decode("utf-8", "replace")
        self.tool_version = self.tool_version_bytes.decode("utf-8", "replace")
        self.header_end = f.tell()
        f.seek(0)
        self.custom_header = f.read(self.header_end)
        f.seek(self.header_end)

    def _read_toc(self, f, size: int) -> None:
        """The entries as columns: positions and ids in arrays, kinds, schemas, tablespaces and access methods as
        codes (_Codes); tags only where the split needs them (data, SCHEMA and schema-less entries), data offsets
        and dependencies only where there are any. Never an entry's SQL."""
        r = _Reader(f, self.int_size)
        offsets = "I" if size < 1 << 32 else "q"
        self._dump_id, self._start, self._end = array("i"), array(offsets), array(offsets)
        self._desc, self._namespace = _Codes("H"), _Codes("I")
        self._tablespace, self._tableam = _Codes("H"), _Codes("H")
        self._tags: dict[int, str] = {}
        self._blocks: dict[int, int] = {}  # entry -> data block offset
        self._block_end: dict[int, int] = {}
        self._deps: dict[int, tuple[int, ...]] = {}
        self._odd_names: set[str] = set()  # schemas with a tag or name holding a line break
        for i in range(r.int()):
            start = f.tell()
            dump_id = r.int()
            r.int()  # hadDumper
            r.skip_str()  # tableoid
            r.skip_str()  # oid
            tag = r.str() or ""
            desc = r.str() or ""
            r.int()  # section
            r.skip_str()  # defn
            r.skip_str()  # dropStmt
            r.skip_str()  # copyStmt
            namespace = r.str() or ""
            tablespace = r.str()
            tableam = r.str()
            if self.version >= (1, 16):
                r.int()  # relkind
            r.skip_str()  # owner
            r.skip_str()  # "false" (WITH OIDS)
            deps = []
            while (dep := r.str()) is not None:
                if not dep.isascii() or not dep.isdigit():
                    raise SplitError(f"The batch archive's {desc} {tag!r} has a damaged dependency.")
                deps.append(int(dep))
            common_end = f.tell()
            state = r.byte()
            raw = f.read(self.off_size)
            if len(raw) != self.off_size:
                raise SplitError("The batch archive's table of contents ends early.")
            if state not in (K_OFFSET_POS_NOT_SET, K_OFFSET_POS_SET, K_OFFSET_NO_DATA):
                raise SplitError(f"The batch archive's {desc} {tag!r} has a damaged data offset.")
            if state == K_OFFSET_POS_NOT_SET:
                raise SplitUnsupported(f"The batch archive's {desc} {tag!r} has data but no offset (written to a "
                                       "pipe?): the splitter needs the archive written to a file.")
            if state == K_OFFSET_POS_SET and desc != "TABLE DATA":
                raise SplitUnsupported(f"The batch archive holds {desc} data (large objects?), which the splitter "
                                       "does not handle.")
            has_data = state == K_OFFSET_POS_SET
            self._dump_id.append(dump_id)
            self._start.append(start)
            self._end.append(common_end)
            self._desc.append(desc)
            self._namespace.append(namespace)
            self._tablespace.append(tablespace)
            self._tableam.append(tableam)
            if has_data or desc == "SCHEMA" or not namespace:
                self._tags[i] = tag
            if has_data:
                self._blocks[i] = int.from_bytes(raw, "little")
            if not namespace and deps:
                self._deps[i] = tuple(deps)
            if any(c in tag or c in namespace for c in "\r\n"):
                self._odd_names.add(namespace or tag)
        self.toc_end = f.tell()

    def _block_ends(self, size: int) -> None:
        """Each data block ends where the next begins (pg_dump writes them one after another after the table of
        contents, nothing after the last); checked again when a block is read."""
        starts = sorted((offset, i) for i, offset in self._blocks.items())
        if (starts[0][0] if starts else size) != self.toc_end:  # (an entry dropped, or a block nobody names)
            raise SplitError("The batch archive's table of contents does not end where its data begins.")
        for k, (offset, i) in enumerate(starts):
            following = starts[k + 1][0] if k + 1 < len(starts) else size
            if not self.header_end < offset < following <= size:
                raise SplitError("The batch archive's data offsets are out of order.")
            self._block_end[i] = following

    def __len__(self) -> int:
        return len(self._dump_id)

    def entry(self, i: int) -> Entry:
        """The i-th entry of the table of contents (`tag` only for data, SCHEMA and schema-less entries)."""
        return Entry(self._dump_id[i], self._desc[i], self._tags.get(i, ""), self._namespace[i], self._start[i],
                     self._end[i], self._blocks.get(i, -1), "", self._deps.get(i, ()), self._tablespace[i],
                     self._tableam[i], i)

    @property
    def entries(self) -> list[Entry]:
        return [self.entry(i) for i in range(len(self))]

    def copy_stmt(self, entry: Entry) -> str:
        """A data entry's COPY statement, read again from the archive."""
        with self.path.open("rb") as toc:
            return self._entry_text(toc.fileno(), entry).copy_stmt.decode("utf-8", "replace")

    def members(self, schemas: list[str]) -> dict[str, MemberPart]:
        """Every schema's entries (the shared session entries go to each); raises SplitError for an orphan."""
        parts = {s: MemberPart(s, self) for s in schemas}
        schema_entry = {self._dump_id[i]: tag for i, tag in self._tags.items()
                        if self._desc[i] == "SCHEMA" and tag in parts}
        for i in range(len(self)):
            desc, namespace = self._desc[i], self._namespace[i]
            if desc in SHARED_DESCS:
                owners = schemas
            elif namespace:
                owners = [namespace]
            elif desc == "SCHEMA":
                owners = [self._tags[i]]
            else:  # COMMENT ON SCHEMA and the like: owned through their dependency on the schema
                owners = sorted({schema_entry[d] for d in self._deps.get(i, ()) if d in schema_entry})
                if len(owners) != 1:
                    raise SplitError(f"The batch archive's {desc} {self._tags.get(i, '')!r} belongs to no single "
                                     "schema.")
            for owner in owners:
                if owner not in parts:
                    raise SplitError(f"The batch archive holds {desc} {self._tag(i)!r} of schema {owner!r}, "
                                     "which is not in the batch.")
                parts[owner].positions.append(i)
        return parts

    def _tag(self, i: int) -> str:
        if i in self._tags:
            return self._tags[i]
        with self.path.open("rb") as toc:
            return self._entry_text(toc.fileno(), self.entry(i)).tag.decode("utf-8", "replace")

    # ------------------------------------------------------------------ one member's archive

    def write_custom(self, part: MemberPart, write: Write, *, read_size: int = CHUNK) -> None:
        """Stream `part` as a custom-format archive (no compression, data offsets not set, like a piped -Fc)."""
        no_data = bytes([K_OFFSET_NO_DATA]) + bytes(self.off_size)
        not_set = bytes([K_OFFSET_POS_NOT_SET]) + bytes(self.off_size)
        write(self.custom_header)
        write(write_int(len(part.positions), self.int_size))
        with self.path.open("rb", buffering=0) as f:
            fd = f.fileno()
            pending = bytearray()
            for entry in part.entries:
                pending += os.pread(fd, entry.common_end - entry.start, entry.start)
                pending += not_set if entry.data_offset >= 0 else no_data
                if len(pending) >= read_size:
                    write(bytes(pending))
                    pending.clear()
            if pending:
                write(bytes(pending))
            end = write_int(0, self.int_size)
            for entry in part.data_entries:  # each block as pg_dump wrote it: header, length-prefixed chunks, 0
                start, stop = self._block_span(f, entry)
                if os.pread(fd, len(end), stop - len(end)) != end:
                    raise SplitError(f"The batch archive's data block of {entry.tag!r} does not end where the "
                                     "next begins.")
                f.seek(start)
                left = stop - start
                while left:
                    piece = f.read(min(read_size, left))
                    if not piece:
                        raise SplitError("The batch archive ends inside a data block.")
                    left -= len(piece)
                    write(piece)

    def _block_span(self, f, entry: Entry) -> tuple[int, int]:
        """Where the entry's data block is in the batch file, its header checked (a data block of this entry)."""
        start, stop = entry.data_offset, self._block_end[entry.position]
        head = os.pread(f.fileno(), 1 + 1 + self.int_size, start)
        if head != bytes([BLK_DATA]) + write_int(entry.dump_id, self.int_size):
            raise SplitError(f"The batch archive's data block of {entry.tag!r} is not where its offset says.")
        return start, stop

    def _data_chunks(self, entry: Entry, read_size: int) -> Iterator[bytes]:
        """The entry's data (its COPY text): the block's length-prefixed chunks (pg_dump writes one a row) parsed
        out and joined up to `read_size`; the block must end exactly where the next begins."""
        step = 1 + self.int_size
        with self.path.open("rb", buffering=0) as f:
            start, stop = self._block_span(f, entry)
            span = _Span(f, start + step + 1, stop, read_size)
            out: list[bytes] = []
            size = 0
            while True:
                head = span.take(step)
                n = int.from_bytes(head[1:], "little")
                if head[0]:
                    raise SplitError(f"The batch archive's data block of {entry.tag!r} is damaged.")
                if n == 0:
                    break
                out.append(span.take(n))
                size += n
                if size >= read_size:
                    yield b"".join(out)
                    out, size = [], 0
            if not span.done():
                raise SplitError(f"The batch archive's data block of {entry.tag!r} does not end where the next "
                                 "begins.")
            if out:
                yield b"".join(out)

    # ------------------------------------------------------------------ one member's plain SQL

    def sql_features(self, part: MemberPart) -> frozenset[str] | None:
        """What the member's plain SQL depends on (its entry kinds, tablespaces, table access methods), or None
        when write_sql cannot reproduce `pg_restore -f -` for it: then pg_restore must write it."""
        entries = part.entries
        descs = {e.desc for e in entries}
        if not {"ENCODING", "STDSTRINGS", "SEARCHPATH"} <= descs or not descs <= SQL_DESCS | SHARED_DESCS:
            return None
        features = set(descs)
        if part.schema in self._odd_names:
            return None  # pg_restore rewrites line breaks in its comment lines
        for entry in entries:
            if entry.tablespace not in (None, "") or entry.tableam not in (None, "heap"):
                return None  # pg_restore would quote them (fmtId); not needed for tenant schemas
            if entry.desc == "TABLE DATA" and entry.data_offset < 0:
                return None
            features.add(f"tablespace:{entry.tablespace}")
            features.add(f"tableam:{entry.tableam}")
        with self.path.open("rb") as toc:
            for entry in entries:
                if entry.desc in ("SCHEMA", "ENCODING", "STDSTRINGS"):
                    defn = self._entry_text(toc.fileno(), entry).defn
                    if not _SESSION_DEFN[entry.desc].fullmatch(defn):
                        return None
        return frozenset(features)

    def write_sql(self, part: MemberPart, write: Write, *, restrict_key: str, read_size: int = CHUNK) -> None:
        """Stream the plain SQL `pg_restore --no-owner --no-acl --restrict-key=KEY -f -` writes for `part`'s
        custom archive, without running it: the same header, session settings, entry comments, definitions,
        COPY data and trailer, byte for byte (PostgreSQL 15's pg_restore; the caller checks this against
        pg_restore itself before trusting it, see backups.backup.batch.run). Everything is copied as the
        archive's own bytes, in its own encoding. Call only when sql_features() is not None."""
        if not _RESTRICT_KEY.fullmatch(restrict_key):
            raise ValueError("A restrict key is letters and digits.")
        key = restrict_key.encode("ascii")
        with self.path.open("rb") as toc:
            fd = toc.fileno()
            entries = part.entries
            texts = {e.desc: self._entry_text(fd, e) for e in entries
                     if e.desc in ("ENCODING", "STDSTRINGS", "SEARCHPATH")}
            encoding = re.fullmatch(rb"SET client_encoding = '([^']*)';\n", texts["ENCODING"].defn)
            std = re.fullmatch(rb"SET standard_conforming_strings = '(on|off)';\n", texts["STDSTRINGS"].defn)
            if encoding is None or std is None:
                raise SplitUnsupported("The batch archive's ENCODING or STDSTRINGS entry is not pg_dump's.")
            out = [b"--\n-- PostgreSQL database dump\n--\n\n\\restrict " + key + b"\n\n"]
            if self.server_version:
                out.append(b"-- Dumped from database version " + self.server_version_bytes + b"\n")
            if self.tool_version:
                out.append(b"-- Dumped by pg_dump version " + self.tool_version_bytes + b"\n")
            out += [b"\nSET statement_timeout = 0;\nSET lock_timeout = 0;\n"
                    b"SET idle_in_transaction_session_timeout = 0;\n",
                    b"SET client_encoding = '" + encoding.group(1) + b"';\n",
                    b"SET standard_conforming_strings = " + std.group(1) + b";\n",
                    texts["SEARCHPATH"].defn,
                    b"SET check_function_bodies = false;\nSET xmloption = content;\n",
                    b"SET client_min_messages = warning;\n"]
            if std.group(1) == b"off":
                out.append(b"SET escape_string_warning = off;\n")
            out.append(b"SET row_security = off;\n\n")
            write(b"".join(out))
            tablespace = tableam = None
            for entry in entries:
                if entry.desc in SHARED_DESCS:
                    continue  # the session settings above; DATABASE only with --create
                out = []
                if entry.tablespace is not None and entry.tablespace != tablespace:
                    out.append(b"SET default_tablespace = '';\n\n")  # sql_features: only the default one
                    tablespace = entry.tablespace
                if entry.tableam is not None and entry.tableam != tableam:
                    out.append(b"SET default_table_access_method = " + entry.tableam.encode() + b";\n\n")
                    tableam = entry.tableam
                text = self._entry_text(fd, entry)
                out.append(b"--\n-- " + (b"Data for " if entry.data_offset >= 0 else b"") + b"Name: " + text.tag
                           + b"; Type: " + text.desc + b"; Schema: " + (text.namespace or b"-") + b"; Owner: -\n--\n\n")
                # (SCHEMA: with --no-owner pg_restore writes "CREATE SCHEMA <name>;" itself, the name quoted as
                # pg_dump quoted it in the definition, which sql_features checked is just that)
                if text.defn:
                    out.append(text.defn + b"\n\n")
                if entry.data_offset >= 0:
                    out.append(text.copy_stmt)
                write(b"".join(out))
                if entry.data_offset >= 0:
                    for chunk in self._data_chunks(entry, read_size):
                        write(chunk)
        write(b"--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict " + key + b"\n\n")

    def _entry_text(self, fd: int, entry: Entry) -> _EntryText:
        """The entry's strings as the archive's bytes, read again from the archive (its SQL is never kept)."""
        raw = os.pread(fd, entry.common_end - entry.start, entry.start)
        pos = 0
        step = 1 + self.int_size

        def integer() -> int:
            nonlocal pos
            if pos + step > len(raw):
                raise SplitError("The batch archive's table of contents ends early.")
            value = int.from_bytes(raw[pos + 1:pos + step], "little")
            negative = raw[pos]
            pos += step
            return -value if negative else value

        def text() -> bytes:
            nonlocal pos
            n = integer()
            if n <= 0:
                return b""
            if pos + n > len(raw):
                raise SplitError("The batch archive's table of contents ends early.")
            pos += n
            return raw[pos - n:pos]

        integer(), integer()  # dumpId, hadDumper
        text(), text()  # tableoid, oid
        tag, desc = text(), text()
        integer()  # section
        defn = text()
        text()  # dropStmt
        copy_stmt = text()
        namespace = text()
        return _EntryText(tag, desc, defn, copy_stmt, namespace)

    # ------------------------------------------------------------------ manifest facts

    def row_counts(self, part: MemberPart, *, read_size: int = CHUNK) -> dict[str, int]:
        """Rows per table, counted in the dump's own COPY data (one row a line: newlines inside values are
        escaped), so they are the rows of the dump's snapshot."""
        counts = {}
        for entry in part.data_entries:
            n, tail = 0, b""
            for chunk in self._data_chunks(entry, read_size):
                n += chunk.count(b"\n")
                tail = (tail + chunk)[-len(COPY_END) - 1:]
            if tail.endswith(COPY_END):  # pg_dump ends the data with the end-of-copy line and two blank lines
                n -= COPY_END.count(b"\n")
            counts[entry.tag] = n
        return counts

    def migrations(self, part: MemberPart) -> dict[str, list[str]]:
        """The schema's applied Django migrations, read from its django_migrations data, in id order."""
        entry = next((e for e in part.data_entries if e.tag == "django_migrations"), None)
        if entry is None:
            return {}
        match = _COPY_COLUMNS.search(self.copy_stmt(entry))
        columns = [c.strip().strip('"') for c in match.group(1).split(",")] if match else []
        if not {"id", "app", "name"} <= set(columns):
            return {}
        at = {c: columns.index(c) for c in ("id", "app", "name")}
        rows = []
        data = b"".join(self._data_chunks(entry, CHUNK))  # a few hundred small rows
        for line in data.removesuffix(COPY_END).decode("utf-8").splitlines():
            fields = line.split("\t")
            rows.append((int(fields[at["id"]]), _copy_text(fields[at["app"]]), _copy_text(fields[at["name"]])))
        applied: dict[str, list[str]] = {}
        for _, app, name in sorted(rows):
            applied.setdefault(app, []).append(name)
        return applied


def restrict_key() -> str:
    """A fresh random psql \\restrict key, as pg_restore makes one: 63 letters and digits."""
    return "".join(secrets.choice(RESTRICT_CHARS) for _ in range(63))


_COPY_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def _copy_text(value: str) -> str:
    """A COPY text-format field decoded (backslash escapes)."""
    if "\\" not in value:
        return value
    return re.sub(r"\\(.)", lambda m: _COPY_ESCAPES.get(m.group(1), m.group(1)), value)

