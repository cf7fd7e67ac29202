"""The byte sink every dumper writes into: hash, compress, hash again, store; all streamed."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from backups.core.compression import Compressor
from backups.core.encryption import Transform
from backups.storage.base import ObjectWriter

__all__ = ["BackupSink", "SinkResult", "Transform"]


@dataclass(frozen=True)
class SinkResult:
    """Sizes and checksums of what went in (plain) and what was stored."""

    plain_size: int
    plain_sha256: str
    size: int
    sha256: str


class BackupSink:
    """Consumes a dump chunk by chunk; memory use does not depend on the dump's size.

    Compression runs in a helper thread, one chunk at a time and in order, while the caller's thread hashes
    the plain bytes, stores the previous chunk's output and reads the next chunk (zstd and zlib release the
    GIL): a dump then takes about its compression time, not compression + hashing + I/O one after the other
    (bench/bench_pipeline.py measures it against `pg_dump | zstd`). The writer, the transforms and
    on_progress are only ever called from the caller's thread; at most two chunks are held at a time.
    Chunks under `offload_min` bytes are compressed inline: handing them over costs more than it saves
    (they come when the reader keeps up, e.g. with a compressor that has its own worker threads).
    """

    offload_min = 256 << 10

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
        self._executor: ThreadPoolExecutor | None = None  # its thread ends with finish() or with the sink
        self._pending: Future[bytes] | None = None  # the chunk being compressed

    def _store(self, data: bytes) -> None:
        for transform in self.transforms:
            data = transform.update(data)
        if data:
            self.stored_hash.update(data)
            self.size += len(data)
            self.writer.write(data)

    def _store_pending(self) -> None:
        """Wait for the chunk being compressed and store its output (a compression error is raised here)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            out = pending.result()
            if out:
                self._store(out)

    def write(self, data: bytes) -> None:
        """Take the next chunk of the plain dump; it is compressed later, so it must not change afterwards."""
        self.plain_hash.update(data)
        self.plain_size += len(data)
        if len(data) >= self.offload_min:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backup-sink")
            submitted = self._executor.submit(self.compressor.compress, data)  # runs after the pending one
            self._store_pending()
            self._pending = submitted
        else:
            self._store_pending()
            out = self.compressor.compress(data)
            if out:
                self._store(out)
        if self.on_progress and self.plain_size >= self.next_progress:
            self.next_progress = self.plain_size + self.progress_every
            self.on_progress(self.plain_size)

    def finish(self) -> SinkResult:
        """Flush compression and transforms; the writer is left for the caller to commit."""
        self._store_pending()
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None
        tail = self.compressor.flush()
        for transform in self.transforms:
            tail = transform.update(tail) + transform.finish()
        if tail:
            self.stored_hash.update(tail)
            self.size += len(tail)
            self.writer.write(tail)
        return SinkResult(self.plain_size, self.plain_hash.hexdigest(), self.size, self.stored_hash.hexdigest())
