"""The manifest stored beside each backup: enough to check it, restore it, and rebuild the catalog."""

from __future__ import annotations

import json
from typing import Any

from django.utils import timezone

from .dumpers import DumpInfo
from .sink import SinkResult

MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_VERSION = 1


def manifest_key(key: str) -> str:
    """Where the manifest of the object at `key` lives."""
    return key + MANIFEST_SUFFIX


def build_manifest(*, record, info: DumpInfo, result: SinkResult, encryption: dict | None = None) -> dict[str, Any]:
    """The manifest of one finished dump."""
    return {
        "manifest_version": MANIFEST_VERSION,
        "record_id": record.pk,
        "schema": record.schema_name,
        "file_name": record.file_name,
        "format": record.format,
        "compression": record.compression,
        "encryption": encryption or {},
        "backup_type": record.backup_type,
        "created_at": record.created_at.isoformat(),
        "finished_at": timezone.now().isoformat(),
        "postgresql_version": info.server_version,
        "dump_tool": info.tool,
        "dump_tool_version": info.tool_version,
        "size": result.size,
        "sha256": result.sha256,
        "plain_size": result.plain_size,
        "plain_sha256": result.plain_sha256,
        "row_counts": info.row_counts,
        "migrations": info.migrations,
        "extensions": info.extensions,
    }


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """Stable JSON encoding of a manifest."""
    return json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8")
