"""File names and storage keys, built by the server only and checked against the tenant."""

import posixpath
import re
import uuid
from datetime import UTC, datetime

SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# The identity the public schema's backups are stored and catalogued under (`public/<PUBLIC_UID>/...`): the public
# schema is no tenant (a host project may have no tenant row for it, the demo's public tenant has its own identity),
# so a fixed identity keeps its backups away from every tenant's lookups, and recovery finds them with no database.
PUBLIC_UID = uuid.uuid5(uuid.NAMESPACE_URL, "tenant-backups:public-schema")

FORMAT_EXT = {"sql": "sql", "dump": "dump", "json": "jsonl"}
COMPRESSION_EXT = {"zstd": ".zst", "gzip": ".gz", "none": ""}
ENCRYPTION_EXT = {"age": ".age", "": ""}


class InvalidKey(ValueError):
    """A key that does not lie under the caller's tenant prefix."""


def validate_schema_name(schema: str) -> str:
    """Refuse schema names unsafe for keys and for `pg_dump -n`."""
    if not SCHEMA_RE.fullmatch(schema or ""):
        raise ValueError(f"Invalid schema name {schema!r}: use lowercase letters, digits and underscores.")
    return schema


def backup_file_name(
    *, schema: str, fmt: str, compression: str, automatic: bool, at: datetime, encryption: str = "", suffix: str = ""
) -> str:
    """`[backup|auto]-[format]-[schema]-[YYYY-MM-DD-HHMMSS][suffix].[ext]`, time in UTC."""
    kind = "auto" if automatic else "backup"
    stamp = at.astimezone(UTC).strftime("%Y-%m-%d-%H%M%S")
    ext = FORMAT_EXT[fmt] + COMPRESSION_EXT[compression] + ENCRYPTION_EXT[encryption]
    return f"{kind}-{fmt}-{validate_schema_name(schema)}-{stamp}{suffix}.{ext}"


_STAMPED = re.compile(r"^(?P<stem>.*-\d{4}-\d{2}-\d{2}-\d{6})(?:-\d+)?(?P<ext>\..*)$")


def with_suffix(file_name: str, n: int) -> str:
    """The same backup name with the collision suffix `-n` (replacing any it had): `...-030000-2.sql.zst`."""
    match = _STAMPED.match(file_name)
    if match is None:
        raise ValueError(f"Not a backup file name: {file_name!r}.")
    return f"{match['stem']}-{n}{match['ext']}"


def tenant_prefix(schema: str, uid: uuid.UUID | str) -> str:
    """`<schema>/<identity>/`: every object of one tenant lies under it (with its trailing slash).

    The schema name keeps the bucket readable; the identity (a UUID never reused) keeps a later tenant
    that is given the same schema name away from this one's objects.
    """
    return f"{validate_schema_name(schema)}/{uuid.UUID(str(uid))}/"


def tenant_key(schema: str, uid: uuid.UUID | str, file_name: str) -> str:
    """`<schema>/<identity>/<file>`: the backend adds its own root (`backups/` for S3)."""
    if "/" in file_name or file_name in {"", ".", ".."}:
        raise InvalidKey(f"Invalid file name {file_name!r}.")
    return tenant_prefix(schema, uid) + file_name


def check_tenant_key(key: str, schema: str, uid: uuid.UUID | str) -> str:
    """Return `key` if it names an object directly under the tenant's prefix, else raise InvalidKey."""
    if not isinstance(key, str) or not key or len(key) > 1024 or "\x00" in key or "\\" in key:
        raise InvalidKey("The key is not a valid backup key.")
    normalized = posixpath.normpath(key)
    prefix = tenant_prefix(schema, uid)
    if key.startswith("/") or normalized != key or not key.startswith(prefix):
        raise InvalidKey("The key does not belong to this tenant.")
    rest = key[len(prefix):]
    if not rest or "/" in rest or rest in {".", ".."}:
        raise InvalidKey("The key does not belong to this tenant.")
    if len(rest.encode("utf-8")) > 255:
        raise InvalidKey("The key's file name is longer than 255 bytes.")
    return key
