"""The byte sink every dumper writes into: hash, compress, hash again, store; all streamed."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from .compression import Compressor
from .storage.base import ObjectWriter


@dataclass(frozen=True)
class SinkResult:
    """Sizes and checksums of what went in (plain) and what was stored."""

    plain_size: int
    plain_sha256: str
    size: int
    sha256: str


class Transform:
    """A streaming byte transform (encryption) between compression and storage."""

    def update(self, data: bytes) -> bytes:
        raise NotImplementedError

    def finish(self) -> bytes:
        raise NotImplementedError


class BackupSink:
    """Consumes a dump chunk by chunk; memory use does not depend on the dump's size."""

    def __init__(
        self,
        writer: ObjectWriter,
        compressor: Compressor,
        *,
        transforms: tuple[Transform, ...] = (),
        on_progress: Callable[[int], None] | None = None,
        progress_every: int = 64 << 20,
    ) -> None:
        self.writer = writer
        self.compressor = compressor
        self.transforms = transforms
        self.plain_hash = hashlib.sha256()
        self.stored_hash = hashlib.sha256()
        self.plain_size = 0
        self.size = 0
        self.on_progress = on_progress
        self.progress_every = progress_every
        self.next_progress = progress_every

    def _store(self, data: bytes) -> None:
        for transform in self.transforms:
            data = transform.update(data)
        if data:
            self.stored_hash.update(data)
            self.size += len(data)
            self.writer.write(data)

    def write(self, data: bytes) -> None:
        """Take the next chunk of the plain dump."""
        self.plain_hash.update(data)
        self.plain_size += len(data)
        out = self.compressor.compress(data)
        if out:
            self._store(out)
        if self.on_progress and self.plain_size >= self.next_progress:
            self.next_progress = self.plain_size + self.progress_every
            self.on_progress(self.plain_size)

    def finish(self) -> SinkResult:
        """Flush compression and transforms; the writer is left for the caller to commit."""
        tail = self.compressor.flush()
        for transform in self.transforms:
            tail = transform.update(tail) + transform.finish()
        if tail:
            self.stored_hash.update(tail)
            self.size += len(tail)
            self.writer.write(tail)
        return SinkResult(self.plain_size, self.plain_hash.hexdigest(), self.size, self.stored_hash.hexdigest())
