"""Spool files of this kernel's processes, each held with an exclusive flock while it is used, so that what a
killed process left is told apart from a live one's by the lock alone.

Spool files (a restore's `tb-restore-*.spool`, a batch's `tenant-backups-batch-*.dump`) are made by spool_create:
the process that makes one holds an exclusive `flock` on it for as long as it uses it. The kernel drops that lock
when the process dies, however it dies (kill -9, the OOM killer), and never before. The cleaner takes
`flock(LOCK_EX | LOCK_NB)` on each candidate and unlinks only a file it locked, while it holds the lock; a maker
that lost the instant between creating its file and locking it finds the file unlinked once it gets the lock, and
makes another. So a file is removed only when no live process holds it.

flock is exact between processes of ONE kernel (containers of one host included): each name carries this
kernel's boot id, and a cleaner looks only at its own kernel's names, so a spool directory shared by several hosts
(NFS) never has one host remove another's live file. flock over NFS is emulated with byte-range locks through the
server and is not reliable (a lost lease drops it): keep BACKUPS_SPOOL_DIR on a local disk. Files named before
this rule (no kernel tag) are never touched: no lock says whether their maker lives.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import logging
import os
import re
import socket
import tempfile
from pathlib import Path

from backups.conf import backups_settings

logger = logging.getLogger(__name__)

RESTORE_SPOOL = ("tb-restore-", ".spool")
BATCH_SPOOL = ("tenant-backups-batch-", ".dump")
SPOOL_KINDS = (RESTORE_SPOOL, BATCH_SPOOL)
# Bytes left free on BACKUPS_SPOOL_DIR's disk beside what a spool needs (a restore's check, a batch's archive, and
# the batch start-up check), for everything else that writes there. One value for every spool (it was 16 MiB for
# restores and 64 MiB for batches).
SPOOL_MARGIN = 64 << 20


@functools.cache
def kernel_tag() -> str:
    """This kernel's boot id (12 hex digits; one for every container of the host), else the host's name."""
    with contextlib.suppress(OSError):
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:12]
        if re.fullmatch(r"[0-9a-f]{12}", boot):
            return boot
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:40] or "host"


def spool_dir() -> Path:
    """Where restores and batches spool (BACKUPS_SPOOL_DIR, default the system's temp dir)."""
    return Path(backups_settings.BACKUPS_SPOOL_DIR or tempfile.gettempdir())


def spool_create(directory: Path, kind: tuple[str, str]) -> tuple[int, str]:
    """A new spool file (mode 0600) named for this kernel, held with an exclusive flock: (fd, path).

    The lock lasts until the fd (and every duplicate of it) is closed or the process dies; the caller unlinks the
    file when done. The fd is not inherited by child processes (PEP 446; subprocess closes it too), so a child
    left running by a killed parent does not keep the file from being cleaned.
    """
    prefix, suffix = kind
    while True:
        fd, path = tempfile.mkstemp(prefix=f"{prefix}{kernel_tag()}-", suffix=suffix, dir=directory)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits only while a cleaner that saw the file first holds it
            if os.fstat(fd).st_nlink:
                return fd, path
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # a cleaner took it in the instant before our lock: make another


def _remove_if_dead(path: Path) -> int | None:
    """Unlink `path` if no live process holds its flock; the bytes it used, or None when it was left."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.warning("cannot check the spool file %s left by another process: %s", path, exc)
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                logger.warning("cannot lock the spool file %s: %s", path, exc)
            return None  # a live process holds it
        held = os.fstat(fd)
        try:
            named = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if not held.st_nlink or (named.st_dev, named.st_ino) != (held.st_dev, held.st_ino):
            return None  # its maker removed it, or another cleaner did
        os.unlink(path)
        return held.st_blocks * 512
    finally:
        os.close(fd)  # releases our lock


def spool_files_remove(directory: Path | None = None) -> tuple[int, int]:
    """Remove this kernel's spool files that no live process holds: (files, bytes)."""
    directory = directory or spool_dir()
    files = freed = 0
    try:
        names = os.listdir(directory)
    except OSError as exc:
        logger.warning("cannot list BACKUPS_SPOOL_DIR %s to remove what dead processes left: %s", directory, exc)
        return 0, 0
    for name in names:
        if not any(name.startswith(f"{prefix}{kernel_tag()}-") and name.endswith(suffix)
                   for prefix, suffix in SPOOL_KINDS):
            continue
        size = _remove_if_dead(directory / name)
        if size is not None:
            files, freed = files + 1, freed + size
    if files:
        logger.warning("removed %d spool files (%d bytes) left in %s by processes that died", files, freed,
                       directory)
    return files, freed
