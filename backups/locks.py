"""PostgreSQL advisory locks: held by a live worker, released by the server when that worker dies."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Collection, Iterator
from typing import TypeVar

from django.db import connection, models

logger = logging.getLogger(__name__)
Row = TypeVar("Row", bound=models.Model)

RECORD_NAMESPACE = 0x7462  # one record is run by one worker at a time


@contextlib.contextmanager
def advisory_lock(namespace: int, key: int) -> Iterator[bool]:
    """Try a session-level lock on Django's connection; yields whether it was taken."""
    with connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s, %s)", (namespace, key))
        taken = bool(cur.fetchone()[0])
    try:
        yield taken
    finally:
        if taken and connection.connection is not None:
            with connection.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s, %s)", (namespace, key))


@contextlib.contextmanager
def claim_unfinished(model: type[Row], pk: int, *, namespace: int,
                     finished: Collection[str]) -> Iterator[tuple[Row | None, bool]]:
    """Load a row by id and hold its advisory lock while the caller runs it: yields (row, claimed).

    `claimed` is False, and the caller must do nothing, when the row is missing, already finished (its
    `status` in `finished`), or held by another live worker. A row left unfinished by a dead worker has a
    free lock, so it is claimed again: that is what makes a redelivered task run once.
    """
    name = model._meta.verbose_name
    row = model.objects.filter(pk=pk).first()
    if row is None:
        logger.warning("%s %s does not exist; nothing to do", name, pk)
        yield None, False
        return
    if row.status in finished:
        yield row, False
        return
    with advisory_lock(namespace, pk) as taken:
        if not taken:
            logger.info("%s %s is being run by another worker", name, pk)
            yield row, False
            return
        row.refresh_from_db()
        yield row, row.status not in finished


DUMP_SLOT_NAMESPACE = 0x7463  # at most BACKUPS_MAX_CONCURRENT_DUMPS dumps against one database at a time


@contextlib.contextmanager
def dump_slot(slots: int, *, wait_seconds: float, poll_seconds: float = 1.0) -> Iterator[int | None]:
    """Take one of `slots` advisory locks, waiting up to `wait_seconds`; yields the slot, or None if all stay busy.

    The server releases a dead worker's slot with its connection, so a crash never leaks one.
    """
    import time

    deadline = time.monotonic() + wait_seconds
    while True:
        for slot in range(max(1, slots)):
            with connection.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s, %s)", (DUMP_SLOT_NAMESPACE, slot))
                if cur.fetchone()[0]:
                    break
        else:
            if time.monotonic() >= deadline:
                yield None
                return
            time.sleep(poll_seconds)
            continue
        break
    try:
        yield slot
    finally:
        if connection.connection is not None:
            with connection.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s, %s)", (DUMP_SLOT_NAMESPACE, slot))
