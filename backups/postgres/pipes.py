"""One way to run a PostgreSQL tool as a pipe: fed from a thread, read by the caller, its stderr's tail kept.

pg_dump, pg_restore and friends write megabytes a second into a pipe and may block on a full stderr; a feeder
thread writes stdin while the caller reads stdout (so neither side waits on the other), a drain thread keeps the
last STDERR_TAIL bytes of stderr for the error message, and leaving the block early kills the child so nothing
outlives its reader. Every call site (the single dump, the batch's spool dump and its per-member pg_restore, the
restore's script) goes through `piped`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
STDERR_TAIL = 16 * 1024

Write = Callable[[bytes], object]


class Piped:
    """A running child: read `chunks()` (when its stdout is piped), then `wait()` for its status."""

    def __init__(self, cmd: list[str], *, feed: Callable[[Write], None] | None, env: Mapping[str, str] | None,
                 read_stdout: bool, pipe_size: int | None) -> None:
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
            stdout=subprocess.PIPE if read_stdout else subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None, bufsize=0)
        if pipe_size and read_stdout:
            with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size: keep the default
                fcntl.fcntl(self.proc.stdout.fileno(), F_SETPIPE_SZ, pipe_size)
        self._tail = bytearray()
        self._feed_errors: list[BaseException] = []
        self._threads = [threading.Thread(target=self._drain, daemon=True)]
        if feed:
            self._threads.append(threading.Thread(target=self._feed, args=(feed,), daemon=True))
        for thread in self._threads:
            thread.start()

    def _drain(self) -> None:
        for chunk in iter(lambda: self.proc.stderr.read(4096), b""):
            self._tail.extend(chunk)
            del self._tail[:-STDERR_TAIL]

    def _feed(self, feed: Callable[[Write], None]) -> None:
        try:
            feed(self.proc.stdin.write)
        except BrokenPipeError:
            pass  # the child stopped reading: its status and stderr say why
        except BaseException as exc:  # noqa: BLE001 - raised by wait(), in the caller's thread
            self._feed_errors.append(exc)
        finally:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def chunks(self, size: int) -> Iterator[bytes]:
        """The child's stdout, as it comes (os.read: no Python-level buffering of a fast pipe)."""
        fd = self.proc.stdout.fileno()
        while chunk := os.read(fd, size):
            yield chunk

    def wait(self) -> int:
        """The child's exit status, once its threads are done; a feeder's failure is raised here."""
        returncode = self.proc.wait()
        for thread in self._threads:
            thread.join()
        if self._feed_errors:
            raise self._feed_errors[0]
        return returncode

    @property
    def message(self) -> str:
        """The end of what the child wrote on stderr, or "no message"."""
        return self._tail.decode("utf-8", "replace").strip() or "no message"

    def stop(self) -> None:
        """Kill the child if it still runs, and reap it and the threads."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for thread in self._threads:
            thread.join()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@contextlib.contextmanager
def piped(cmd: list[str], *, feed: Callable[[Write], None] | None = None, env: Mapping[str, str] | None = None,
          read_stdout: bool = True, pipe_size: int | None = None) -> Iterator[Piped]:
    """Run `cmd`; `feed(write)` runs in a thread and writes its stdin (none: /dev/null). The child is killed if the
    block ends before it did."""
    child = Piped(cmd, feed=feed, env=env, read_stdout=read_stdout, pipe_size=pipe_size)
    try:
        yield child
    finally:
        child.stop()
