"""Pipeline variants for tuning (bench/tune_pipeline.py), applied inside bench/pipeline_child.py only.

Each variant changes one thing in the running process (settings, or a monkeypatch of the pipeline's
parts) so the effect of that one thing on backup_run can be measured against `pg_dump | zstd -3 -T1`.
None of them changes a project file.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zstandard


@dataclass(frozen=True)
class Variant:
    """A named change: BACKUPS_* setting overrides and/or a patch applied after django.setup()."""

    description: str
    settings: dict[str, Any] = field(default_factory=dict)
    patch: Callable[[], None] | None = None


# --------------------------------------------------------------------------- patches


def _patch_compressor(factory: Callable[[int], Any]) -> None:
    """Make backup_run build its zstd compressor with `factory(level)`."""
    from backups.backup import run as backup_run
    from backups.core.compression import make_compressor

    def patched(kind: str, *, zstd_level: int = 3, **options):
        if kind == "zstd":
            return factory(zstd_level)
        return make_compressor(kind, zstd_level=zstd_level, **options)

    backup_run.make_compressor = patched


class _Collector:
    """The file object a stream_writer writes its compressed output into."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


class _StreamWriterCompressor:
    """compress()/flush() on top of ZstdCompressor.stream_writer writing into a _Collector."""

    def __init__(self, level: int) -> None:
        import zstandard

        self.out = _Collector()
        self.writer = zstandard.ZstdCompressor(level=level).stream_writer(self.out, write_size=1 << 20, closefd=False)

    def compress(self, data: bytes) -> bytes:
        self.writer.write(data)
        return self.out.take()

    def flush(self) -> bytes:
        import zstandard

        self.writer.flush(zstandard.FLUSH_FRAME)
        return self.out.take()


def stream_writer() -> None:
    """ZstdCompressor.stream_writer instead of compressobj."""
    _patch_compressor(_StreamWriterCompressor)


def no_hashing() -> None:
    """Lower bound: SHA-256 replaced by a no-op (not a valid pipeline; shows what hashing costs)."""
    from backups.storage import sink

    class _NoHash:
        def update(self, data) -> None:
            pass

        def hexdigest(self) -> str:
            return "0" * 64

    class _Hashlib:
        sha256 = _NoHash

    sink.hashlib = _Hashlib


def readinto_buffer() -> None:
    """os.read replaced by readv into one preallocated buffer (the sink consumes each chunk before the next)."""
    from backups.conf import backups_settings
    from backups.postgres import dumpers

    buffer = bytearray(backups_settings.BACKUPS_READ_SIZE)
    view = memoryview(buffer)

    class _Os:
        def __getattr__(self, name: str):
            return getattr(os, name)

        @staticmethod
        def read(fd: int, size: int):
            n = os.readv(fd, [view[:size]])
            return view[:n]

    dumpers.os = _Os()


def reader_thread(depth: int = 8) -> Callable[[], None]:
    """pg_dump's pipe read by a separate thread into a bounded queue (the sink runs in the caller's thread)."""

    def apply() -> None:
        from backups.postgres import dumpers

        readers: dict[int, queue.Queue] = {}

        def pump(fd: int, size: int, q: queue.Queue) -> None:
            while True:
                chunk = os.read(fd, size)
                q.put(chunk)
                if not chunk:
                    return

        class _Os:
            def __getattr__(self, name: str):
                return getattr(os, name)

            @staticmethod
            def read(fd: int, size: int) -> bytes:
                if fd not in readers:
                    readers[fd] = queue.Queue(depth)
                    threading.Thread(target=pump, args=(fd, size, readers[fd]), daemon=True).start()
                chunk = readers[fd].get()
                if not chunk:
                    del readers[fd]
                return chunk

        dumpers.os = _Os()

    return apply


def sink_thread(depth: int = 8) -> Callable[[], None]:
    """BackupSink doing compression, stored hash and storage writes in a worker thread; the caller's
    thread keeps reading pg_dump and hashing the plain bytes."""

    def apply() -> None:
        from backups.backup import run as backup_run
        from backups.storage.sink import BackupSink

        class ThreadedSink(BackupSink):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, **kwargs)
                self.q: queue.Queue = queue.Queue(depth)
                self.error: BaseException | None = None
                self.thread = threading.Thread(target=self._work, daemon=True)
                self.thread.start()

            def _work(self) -> None:
                while (data := self.q.get()) is not None:
                    if self.error is None:
                        try:
                            out = self.compressor.compress(data)
                            if out:
                                self._store(out)
                        except BaseException as exc:  # noqa: BLE001
                            self.error = exc

            def write(self, data: bytes) -> None:
                if self.error is not None:
                    raise self.error
                self.plain_hash.update(data)
                self.plain_size += len(data)
                self.q.put(data)
                if self.on_progress and self.plain_size >= self.next_progress:
                    self.next_progress = self.plain_size + self.progress_every
                    self.on_progress(self.plain_size)

            def finish(self):
                self.q.put(None)
                self.thread.join()
                if self.error is not None:
                    raise self.error
                return super().finish()

        backup_run.BackupSink = ThreadedSink

    return apply


def serial_sink() -> None:
    """The sink as it was before the helper thread: read, hash, compress, hash, store, all in one thread."""
    from backups.backup import run as backup_run
    from backups.storage.sink import BackupSink

    class SerialSink(BackupSink):
        def write(self, data: bytes) -> None:
            self.plain_hash.update(data)
            self.plain_size += len(data)
            out = self.compressor.compress(data)
            if out:
                self._store(out)
            if self.on_progress and self.plain_size >= self.next_progress:
                self.next_progress = self.plain_size + self.progress_every
                self.on_progress(self.plain_size)

    backup_run.BackupSink = SerialSink


def offload_min(size: int) -> Callable[[], None]:
    """BackupSink.offload_min set to `size` (0: every chunk goes to the helper thread)."""

    def apply() -> None:
        from backups.storage.sink import BackupSink

        BackupSink.offload_min = size

    return apply


def both(*patches: Callable[[], None]) -> Callable[[], None]:
    """A patch applying several patches in order."""

    def apply() -> None:
        for patch in patches:
            patch()

    return apply


def overlap_sink(depth: int = 1) -> Callable[[], None]:
    """BackupSink compressing in a one-thread executor (chunks in order, up to `depth` in flight) while the
    caller stores finished output and reads/hashes the next chunks; writer, transforms and progress stay on
    the caller's thread."""

    def apply() -> None:
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        from backups.backup import run as backup_run
        from backups.storage.sink import BackupSink

        class OverlapSink(BackupSink):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, **kwargs)
                self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backup-sink")
                self.pending: deque = deque()

            def write(self, data: bytes) -> None:
                self.plain_hash.update(data)
                self.plain_size += len(data)
                self.pending.append(self.executor.submit(self.compressor.compress, data))
                while self.pending and (len(self.pending) > depth or self.pending[0].done()):
                    out = self.pending.popleft().result()
                    if out:
                        self._store(out)
                if self.on_progress and self.plain_size >= self.next_progress:
                    self.next_progress = self.plain_size + self.progress_every
                    self.on_progress(self.plain_size)

            def finish(self):
                while self.pending:
                    out = self.pending.popleft().result()
                    if out:
                        self._store(out)
                self.executor.shutdown()
                return super().finish()

        backup_run.BackupSink = OverlapSink

    return apply


VARIANTS: dict[str, Variant] = {
    "baseline": Variant("backups/storage/sink.py now: zstandard threads=1 (like zstd -T1) fed from the sink's helper "
                        "thread (chunks >= 256 KiB); os.read 1 MiB, pipe 1 MiB, compressobj, 2x SHA-256"),
    "zstd_t0": Variant("zstandard without worker threads: compression in the sink's helper thread only",
                       settings={"BACKUPS_ZSTD_THREADS": 0}),
    "zstd_job_8m": Variant("zstandard threads=1 with zstd's default job size (8 MiB at level 3) instead of 1 MiB",
                           patch=lambda: _patch_compressor(
                               lambda level: zstandard.ZstdCompressor(level=level, threads=1).compressobj())),
    "offload_all": Variant("helper thread for every chunk (offload_min 0)", patch=offload_min(0)),
    "serial": Variant("one-thread sink (read, hash, compress, hash, write), zstandard threads=1",
                      patch=serial_sink),
    "read_64k": Variant("BACKUPS_READ_SIZE 64 KiB", settings={"BACKUPS_READ_SIZE": 64 << 10}),
    "read_256k": Variant("BACKUPS_READ_SIZE 256 KiB", settings={"BACKUPS_READ_SIZE": 256 << 10}),
    "read_4m": Variant("BACKUPS_READ_SIZE 4 MiB", settings={"BACKUPS_READ_SIZE": 4 << 20}),
    "pipe_64k": Variant("BACKUPS_PIPE_SIZE 64 KiB (the kernel default)", settings={"BACKUPS_PIPE_SIZE": 64 << 10}),
    "serial_readinto": Variant("serial sink, readv into a preallocated buffer instead of os.read",
                               patch=both(serial_sink, readinto_buffer)),
    "no_hash": Variant("no SHA-256 at all (lower bound, not valid)", patch=no_hashing),
    "stream_writer": Variant("ZstdCompressor.stream_writer instead of compressobj", patch=stream_writer),
    "serial_zstd_t0": Variant("serial sink, zstandard without worker threads", patch=serial_sink,
                              settings={"BACKUPS_ZSTD_THREADS": 0}),
    "zstd_t2": Variant("zstandard threads=2", settings={"BACKUPS_ZSTD_THREADS": 2}),
    "reader_thread": Variant("serial sink fed by a reader thread through a queue(8)",
                             patch=both(serial_sink, reader_thread(8))),
    "sink_thread": Variant("sink: compress+hash+store in a worker thread, queue(8)", patch=sink_thread(8)),
    "overlap_4": Variant("helper-thread compression, up to 4 chunks in flight", patch=overlap_sink(4)),
    "overlap_16": Variant("helper-thread compression, up to 16 chunks in flight", patch=overlap_sink(16)),
}


def apply(name: str) -> None:
    """Apply a variant's patch (its settings are applied by the caller)."""
    variant = VARIANTS[name]
    if variant.patch is not None:
        variant.patch()
