"""PostgreSQL advisory locks: held by a live worker, released by the server when that worker dies."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import connection

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
