"""How far a running backup is: its stage, bytes done, an estimated total, percent and time left.

Workers write `stage` and `bytes_done` (raw dump bytes) as they go. The total is estimated, since pg_dump
cannot say in advance how much it will write: the raw size of the tenant's last good backup in the same
format, else the size of the schema's relations (a fair upper bound for a plain dump). Percent stays
below 100 until the record has succeeded, whatever the estimate says.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime

from django.db.models import F
from django.utils import timezone

from backups.catalog.selectors import schema_relation_bytes
from backups.models import BackupRecord

logger = logging.getLogger(__name__)

Listener = Callable[[int, int], None]  # (record_id, bytes_done)
_listener: ContextVar[Listener | None] = ContextVar("backups_progress_listener", default=None)


@contextlib.contextmanager
def progress_listener(listener: Listener) -> Iterator[None]:
    """While the block runs, each progress step of a backup also calls `listener` (the task sends Flower an
    event with it). The interface layer sets it; services never import it."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


def progress_listener_now() -> Listener | None:
    """The listener of the current context (capture it before handing work to another thread)."""
    return _listener.get()


def progress_notify(listener: Listener | None, record_id: int, bytes_done: int) -> None:
    """Tell the listener, if any; progress is best effort and never stops a backup."""
    if listener is None:
        return
    try:
        listener(record_id, bytes_done)
    except Exception:  # noqa: BLE001
        logger.debug("progress listener failed", exc_info=True)


@dataclass(frozen=True)
class Progress:
    """A snapshot of a record's progress, for the API, the admin and the CLI."""

    status: str
    stage: str
    bytes_done: int
    estimated_total: int | None
    percent: float | None
    eta_seconds: float | None

    def line(self) -> str:
        """One plain line: `running dumping 120.0 MB of ~300.0 MB (40%), about 12 s left`."""
        text = f"{self.status} {self.stage or '-'} {self.bytes_done / 1e6:.1f} MB"
        if self.estimated_total:
            text += f" of ~{self.estimated_total / 1e6:.1f} MB"
        if self.percent is not None:
            text += f" ({self.percent:.0f}%)"
        if self.eta_seconds is not None:
            text += f", about {self.eta_seconds:.0f} s left"
        return text


def estimated_total(record: BackupRecord) -> int | None:
    """The raw size this backup is likely to reach (None when nothing is known)."""
    if record.status == BackupRecord.Status.SUCCEEDED and record.plain_size:
        return record.plain_size
    last = (BackupRecord.objects.filter(tenant_uid=record.tenant_uid, format=record.format,
                                        status=BackupRecord.Status.SUCCEEDED, plain_size__gt=0)
            .exclude(pk=record.pk).order_by(F("finished_at").desc(nulls_last=True))
            .values_list("plain_size", flat=True).first())
    if last:
        return int(last)
    size = schema_relation_bytes(record.schema_name)
    return size or None


def progress_of(record: BackupRecord, *, now: datetime | None = None) -> Progress:
    """The record's progress; percent and ETA only while it runs or once it succeeded."""
    done = int(record.bytes_done or 0)
    if record.status == BackupRecord.Status.SUCCEEDED:
        total = int(record.plain_size or done) or None
        return Progress(record.status, record.stage or "done", total or done, total, 100.0, 0.0)
    if not record.is_active:
        return Progress(record.status, record.stage, done, None, None, None)
    total = estimated_total(record)
    percent = eta = None
    if total:
        percent = min(99.0, 100.0 * done / total)
        if record.started_at and done > 0:
            elapsed = ((now or timezone.now()) - record.started_at).total_seconds()
            if elapsed > 0:
                eta = max(0.0, (total - done) / (done / elapsed))
    return Progress(record.status, record.stage, done, total, percent, eta)
