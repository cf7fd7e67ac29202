"""Progress of a backup on the command line: a bar on a terminal, a plain line every few seconds otherwise."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Iterator
from typing import TextIO

from django.db import connection

from backups.catalog.progress import progress_of
from backups.models import BackupRecord


def _bar(percent: float | None, width: int) -> str:
    if percent is None:
        return ""
    filled = int(width * percent / 100)
    return "[" + "#" * filled + "." * (width - filled) + "] "


@contextlib.contextmanager
def shown_progress(record_id: int, out: TextIO, *, every: float = 1.0, plain_every: float = 5.0) -> Iterator[None]:
    """While the block runs, poll the record (its own database connection) and show how far it is."""
    tty = hasattr(out, "isatty") and out.isatty()
    stop = threading.Event()

    def poll() -> None:
        last_plain = 0.0
        try:
            while not stop.wait(every):
                record = BackupRecord.objects.filter(pk=record_id).first()
                if record is None:
                    continue
                progress = progress_of(record)
                line = progress.line()
                if tty:
                    width = max(10, min(40, shutil.get_terminal_size((80, 20)).columns - len(line) - 4))
                    out.write("\r" + _bar(progress.percent, width) + line + "\033[K")
                    out.flush()
                elif time.monotonic() - last_plain >= plain_every:
                    out.write(line + "\n")
                    out.flush()
                    last_plain = time.monotonic()
        finally:
            connection.close()

    thread = threading.Thread(target=poll, name="backup-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        if tty:
            out.write("\r\033[K")
            out.flush()
