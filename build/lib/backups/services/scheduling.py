"""Spreading tenants inside their slot, so 2,000 tenants due at 02:00 do not all start at 02:00."""

from __future__ import annotations

from datetime import timedelta

from backups import conf
from backups.scheduling import slot_offset_seconds


def spread_offset(schema_name: str) -> timedelta:
    """The tenant's stable offset in [0, BACKUPS_SPREAD_SECONDS): same tenant, same offset, on every host."""
    window = int(conf.get("BACKUPS_SPREAD_SECONDS"))
    return timedelta(seconds=slot_offset_seconds(schema_name, window)) if window > 0 else timedelta(0)
