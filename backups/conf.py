"""The backups app's settings: one object, `backups_settings`, read by attribute.

    from backups.conf import backups_settings

    backups_settings.BACKUPS_STORAGE          # "local", or what the host project set
    backups_settings.BACKUPS_STORAGEE         # AttributeError: unknown tenant-backups setting 'BACKUPS_STORAGEE'

Every setting has its default here (DEFAULTS), so a host project sets only what it changes. A value is read from
django.conf.settings on every access and brought to its default's type (an int, float, bool or tuple setting given
as a string, as from the environment, comes back as that type; NULLABLE settings also accept None); a setting in
IMPORT_STRINGS given as a dotted path comes back as the object it names. The converted value is kept only while the
project's raw value is the same object, and forgotten on Django's setting_changed signal, so override_settings and
pytest-django's `settings` fixture are seen at once. Modelled on django-oauth-toolkit's `oauth2_settings`.
"""

import json
import os
import warnings
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

DEFAULTS: dict[str, Any] = {
    "BACKUPS_STORAGE": "local",
    "BACKUPS_LOCAL_ROOT": "var/backups",
    "BACKUPS_DEFAULT_FORMAT": "sql",
    "BACKUPS_COMPRESSION": "zstd",
    "BACKUPS_ZSTD_LEVEL": 3,
    "BACKUPS_ZSTD_THREADS": 1,
    "BACKUPS_GZIP_LEVEL": 6,
    "BACKUPS_PG_BIN_DIR": "",
    # Session settings pg_dump's connection starts with (libpq PGOPTIONS). PostgreSQL 15's planner runs pg_dump's
    # materialized-view dependency query as a merge join over all of pg_depend once thousands of schemas exist: 60 s
    # of every pg_dump call at 10,000 tenants, 3 ms as a hash join. Its catalog queries then look expensive enough to
    # be JIT-compiled (about 1 s of compiling for the index query of 1,600 tenants, for 0.2-0.5 s a call less in
    # all). Planner and executor choices only: what is dumped is the same.
    "BACKUPS_PG_DUMP_OPTIONS": "-c enable_mergejoin=off -c jit=off",
    # A restore puts back the owners and grants the manifest recorded (backups.postgres.privileges); False restores
    # every object owned by the restoring role with its default privileges, as pg_restore --no-owner --no-acl would.
    "BACKUPS_RESTORE_PRIVILEGES": True,
    "BACKUPS_READ_SIZE": 1 << 20,
    # Reads of one stored object a restore or drill makes when the network cuts it (reset, stall past the read
    # timeout): each resumes from the last byte received (a ranged GET), never from the start.
    "BACKUPS_READ_ATTEMPTS": 5,
    "BACKUPS_PIPE_SIZE": 1 << 20,
    "BACKUPS_PROGRESS_EVERY_BYTES": 64 << 20,
    "BACKUPS_DUMP_SOFT_TIME_LIMIT": 3 * 3600,
    "BACKUPS_DUMP_TIME_LIMIT": 3 * 3600 + 600,
    "BACKUPS_TASK_MAX_RETRIES": 3,
    "BACKUPS_TASK_RETRY_DELAY": 60,
    "BACKUPS_TASK_RETRY_MAX_DELAY": 900,
    "BACKUPS_TRANSIENT_RETRY_WINDOW_SECONDS": 2 * 3600,
    "BACKUPS_JSON_EXCLUDE": ("contenttypes.contenttype", "auth.permission"),
    "BACKUPS_SPOOL_DIR": "",
    "BACKUPS_DELETED_TENANT_KEEP_DAYS": 90,
    # With S3 Object Lock (AWS_S3_OBJECT_LOCK_MODE): the shortest lock of any backup, and how far ahead the lock of
    # a backup retention keeps without an end date (the newest, manual ones) is renewed by each retention pass.
    "BACKUPS_OBJECT_LOCK_DAYS": 7.0,
    "BACKUPS_MANIFEST_KEY": "",
    "BACKUPS_MANIFEST_OLD_KEYS": (),
    "BACKUPS_AGE_RECIPIENTS": "",
    "BACKUPS_AGE_IDENTITY_FILE": "",
    # Envelope encryption (backups.catalog.tenant_keys): with recipients set, each tenant identity's backups are
    # encrypted to a data key of its own, kept wrapped for the recipients, so erasing the key erases every copy.
    # False: backups are encrypted to the recipients directly (as before; an erasure cannot reach locked copies).
    "BACKUPS_TENANT_KEYS": True,
    "BACKUPS_TICK_SECONDS": 300,
    "BACKUPS_REAPER_SECONDS": 600,
    "BACKUPS_SPREAD_SECONDS": 1800,
    "BACKUPS_DISPATCH_BATCH": 5000,
    "BACKUPS_FANOUT_BATCH": 100,
    "BACKUPS_MAX_CONCURRENT_DUMPS": 4,
    "BACKUPS_DUMP_SLOT_WAIT_SECONDS": 600,
    "BACKUPS_LOCK_DATABASE_URL": "",
    "BACKUPS_TENANT_LOCK_WAIT_SECONDS": 600,
    # How long any statement a backup runs before or during its dump waits for a table lock another session holds
    # (lock_timeout on our connections, pg_dump --lock-wait-timeout). A tenant whose table stays locked longer (a
    # migration, a stuck transaction) is retried alone with backoff, naming the table and its holder; the rest of
    # its batch goes on. 0: wait without bound (PostgreSQL's default).
    "BACKUPS_LOCK_WAIT_SECONDS": 60,
    "BACKUPS_MANUAL_RETENTION_DAYS": None,
    "BACKUPS_QUEUED_TIMEOUT_SECONDS": 6 * 3600,
    "BACKUPS_RUNNING_GRACE_SECONDS": 600,
    "BACKUPS_ORPHAN_GRACE_SECONDS": 120,
    "BACKUPS_LOST_MESSAGE_SECONDS": 300,
    "BACKUPS_OVERDUE_GRACE_SECONDS": 4 * 3600,
    "BACKUPS_OVERDUE_CHECK_SECONDS": 900,
    "BACKUPS_DRILL_SECONDS": 86400,
    "BACKUPS_DRILL_SAMPLE": 3,
    "BACKUPS_RECONCILE_SECONDS": 86400,
    # The public schema's own backups (backups.backup.public): the shared tables (tenants, domains, operators, beat's
    # entries, this catalog) are what recover_deployment rebuilds the deployment from. Beat's entry runs this often
    # (0: no scheduled public backups); kept like an automatic tenant backup, by these GFS counts.
    # Tenant files (backups.backup.files): what Django's default storage holds for the tenant (read inside its
    # schema, so django-tenants' TenantFileSystemStorage or an S3 storage with a per-tenant location) is backed up
    # with each backup as content-addressed blobs. BACKUPS_FILES_STORAGE: a callable returning the tenant's storage
    # instead (called inside the tenant's schema); empty: django.core.files.storage.default_storage.
    "BACKUPS_FILES": True,
    "BACKUPS_FILES_STORAGE": "",
    "BACKUPS_FILES_THREADS": 4,  # new blobs compressed and stored at once (fsync and uploads overlap)
    "BACKUPS_PUBLIC_BACKUP_SECONDS": 86400,
    "BACKUPS_PUBLIC_KEEP_DAILY": 7,
    "BACKUPS_PUBLIC_KEEP_WEEKLY": 4,
    "BACKUPS_PUBLIC_KEEP_MONTHLY": 12,
    # batched dumps (backups.backup.batch.run): one pg_dump for up to this many due tenants; 1 turns it off
    "BACKUPS_BATCH_SIZE": 2000,  # a cap: batches are spread over the dump slots and cut to the lock table and spool
    "BACKUPS_BATCH_MIN_SIZE": 10,  # a tick's due tenants are spread over the dump slots in batches of at least this
    "BACKUPS_BATCH_LOCK_SHARE": 0.5,  # of the server's lock table, shared by the BACKUPS_MAX_CONCURRENT_DUMPS batches
    "BACKUPS_BATCH_TABLES_PER_TENANT": 30,  # tables + sequences the start-up check assumes; batches count real ones
    "BACKUPS_BATCH_MAX_SPOOL_BYTES": 2 << 30,  # one batch's directory archive in BACKUPS_SPOOL_DIR, at most
    # The REST API (backups.api): it carries its own DRF classes, so a host project needs no REST_FRAMEWORK.
    "BACKUPS_IS_TENANT_ADMIN": "backups.api.roles.is_tenant_admin",
    "BACKUPS_SYNC_WAIT_SECONDS": 30,
    "BACKUPS_MANUAL_PER_HOUR": 6,
    # A replace restore takes a full safety backup and swaps the schema; a verify drill creates and drops a scratch
    # database. One tenant admin asked for 38 replaces in 30 s and 48 drills in 40 s: each is counted per tenant
    # identity per hour, like manual backups (429 with Retry-After past it; 0 turns the API's requests off).
    "BACKUPS_RESTORES_PER_HOUR": 4,
    "BACKUPS_VERIFIES_PER_HOUR": 6,
    # Days a replace's safety (pre_restore) backup is kept; the tenant's newest one is kept whatever its age, so
    # the last restore can always be undone. None: kept until deleted by hand (they used to pile up: 57 MB from
    # one admin's 38 restores).
    "BACKUPS_PRE_RESTORE_RETENTION_DAYS": 14,
    # Side copies (`restore_tenant ... --into <schema>`): a backup restored beside its tenant for operators to query;
    # housekeeping drops each once it is this many days old, checking every BACKUPS_SIDE_COPY_CHECK_SECONDS.
    "BACKUPS_SIDE_COPY_KEEP_DAYS": 7,
    "BACKUPS_SIDE_COPY_CHECK_SECONDS": 3600,
    # A callable (dotted path) run inside a clone's transaction before it commits, with the clone's schema as the
    # current one: anonymizer(schema=..., tenant=..., record=...). Empty: clones keep the backup's data as it is.
    "BACKUPS_CLONE_ANONYMIZER": "",
    # Objects one restore_objects request may name (the API's and the admin's; the command takes any number).
    "BACKUPS_RESTORE_OBJECTS_MAX_PKS": 1000,
    "BACKUPS_URL_MAX_EXPIRY": 7 * 24 * 3600,
    "BACKUPS_URL_DEFAULT_EXPIRY": 3600,
    "BACKUPS_SYNC_POLL_SECONDS": 0.2,
    "BACKUPS_STREAM_CHUNK_BYTES": 1 << 20,
    # The source documents' API (backups.api.compat): clinics' frontends built on those documents read a finished
    # backup from create/'s 201, the history as one array, MiB sizes. Off: the product's API, unchanged.
    "BACKUPS_API_COMPAT": False,
    # The documents' history is one unpaginated array: this many newest backups at most, so a clinic with years
    # of automatic backups does not get thousands of rows in one answer.
    "BACKUPS_API_COMPAT_HISTORY_LIMIT": 100,
    "BACKUPS_API_THROTTLE_RATES": {"anon": "120/min", "user": "1200/min", "auth": "30/min", "schema": "60/min"},
    "BACKUPS_API_NUM_PROXIES": 0,  # proxies in front of the app whose X-Forwarded-For is trusted (0: none)
    # Operations (backups.ops.views): metrics, health probes, alerts.
    "BACKUPS_METRICS_TOKEN": "",  # bearer token of /metrics; empty: metrics are off (404)
    "BACKUPS_METRICS_QUEUES": (),  # queues whose depth is reported; empty: every queue the Celery app declares
    "BACKUPS_METRICS_STATEMENT_TIMEOUT_SECONDS": 10,  # the catalog queries of one scrape give up after this
    "BACKUPS_BROKER_URL": "",  # the broker /readyz and the queue depths look at; empty: the Celery app's broker_url
    "BACKUPS_HEALTH_TIMEOUT_SECONDS": 3.0,  # each /readyz check (database, broker, storage) gives up after this
    "BACKUPS_READYZ_CACHE_SECONDS": 1.0,  # /readyz answers from its last checks this long (anonymous callers)
    # Answered by backups.ops.middleware.HealthProbeMiddleware on any host, before the tenant lookup ("": not answered).
    "BACKUPS_HEALTHZ_PATH": "/healthz",
    "BACKUPS_READYZ_PATH": "/readyz",
    "BACKUPS_ALERT_WEBHOOK_URL": "",  # Slack-compatible incoming webhook ({"text": ...}) told beside ADMINS
    "BACKUPS_ALERT_WEBHOOK_TIMEOUT_SECONDS": 5.0,
}

# A second target (backups.backup.copy): every succeeded backup is copied there, streamed and checked by digest.
# BACKUPS_COPY_STORAGE names its backend ("" = no copy); its settings mirror the primary's under BACKUPS_COPY_:
# BACKUPS_COPY_LOCAL_ROOT, BACKUPS_COPY_AWS_STORAGE_BUCKET_NAME, BACKUPS_COPY_SUPABASE_URL, ... (the primary's
# AWS_*, SUPABASE_* and BACKUPS_S3_PART_SIZE names with BACKUPS_COPY_ in front).
COPY_MIRRORED: dict[str, Any] = {
    "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": "", "AWS_STORAGE_BUCKET_NAME": "",
    "AWS_S3_REGION_NAME": "us-east-1", "AWS_S3_ENDPOINT_URL": "", "AWS_S3_KEY_PREFIX": "backups/", "AWS_S3_SSE": "",
    "AWS_S3_SSE_KMS_KEY_ID": "", "AWS_S3_STORAGE_CLASS": "STANDARD", "AWS_S3_ADDRESSING_STYLE": "auto",
    "AWS_S3_REQUEST_CHECKSUM_CALCULATION": "when_supported", "AWS_S3_CONNECT_TIMEOUT": 10, "AWS_S3_READ_TIMEOUT": 60,
    "AWS_S3_MAX_ATTEMPTS": 5, "AWS_S3_OBJECT_LOCK_MODE": "", "BACKUPS_S3_PART_SIZE": 16 << 20,
    "SUPABASE_URL": "", "SUPABASE_KEY": "", "SUPABASE_BUCKET": "backups", "SUPABASE_S3_ENDPOINT": "",
    "SUPABASE_S3_REGION": "us-east-1", "SUPABASE_S3_ACCESS_KEY_ID": "", "SUPABASE_S3_SECRET_ACCESS_KEY": "",
    "SUPABASE_UPLOAD_LIMIT": 50 << 20,
}
COPY_PREFIX = "BACKUPS_COPY_"
DEFAULTS.update({
    "BACKUPS_COPY_STORAGE": "",
    "BACKUPS_COPY_LOCAL_ROOT": "var/backups-copy",
    # the copy target's own retention (None: the tenant's own counts); e.g. keep monthly backups longer there
    "BACKUPS_COPY_KEEP_DAILY": None,
    "BACKUPS_COPY_KEEP_WEEKLY": None,
    "BACKUPS_COPY_KEEP_MONTHLY": None,
    # copies tried (the first included) before ops are alerted; the reaper's pass retries a failed copy until then
    "BACKUPS_COPY_MAX_ATTEMPTS": 5,
    **{COPY_PREFIX + name.removeprefix("BACKUPS_"): value for name, value in COPY_MIRRORED.items()},
})
NULLABLE: frozenset[str] = frozenset({
    "BACKUPS_MANUAL_RETENTION_DAYS",
    "BACKUPS_PRE_RESTORE_RETENTION_DAYS",
    "BACKUPS_COPY_KEEP_DAILY",
    "BACKUPS_COPY_KEEP_WEEKLY",
    "BACKUPS_COPY_KEEP_MONTHLY",
})


class Number:
    """The type of a duration in seconds (every *_SECONDS setting): an int stays an int, a float a float (waits of
    half a second are allowed), a string reads as either."""


# Types that are not the default's own: the NULLABLE settings whose default is None, and any exception.
TYPES: dict[str, type] = {
    "BACKUPS_MANUAL_RETENTION_DAYS": int,
    "BACKUPS_COPY_KEEP_DAILY": int,
    "BACKUPS_COPY_KEEP_WEEKLY": int,
    "BACKUPS_COPY_KEEP_MONTHLY": int,
}
# Settings given as a dotted path (or the object itself) that are read as the object the path names.
IMPORT_STRINGS: frozenset[str] = frozenset({
    "BACKUPS_IS_TENANT_ADMIN",
    "BACKUPS_CLONE_ANONYMIZER",
    "BACKUPS_FILES_STORAGE",
})

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}
_NONE = {"", "none", "null"}
_MISSING = object()


def _setting_type(name: str, default: Any) -> type | None:
    """What the setting reads as: TYPES, else Number for a duration in seconds, else its default's type."""
    if name in TYPES:
        return TYPES[name]
    if default is None:
        return None
    if name.endswith("_SECONDS") and type(default) in (int, float):
        return Number
    return type(default)


def _coerce(name: str, value: Any, default: Any) -> Any:
    """`value` of setting `name` as its type; ImproperlyConfigured naming the setting when it is not one."""
    kind = _setting_type(name, default)
    if value is None:
        if kind is str:
            return ""
        return None  # as before: a None stays None (NULLABLE settings document it)
    if isinstance(value, str) and name in NULLABLE and value.strip().lower() in _NONE:
        return None
    try:
        if kind is bool:
            if isinstance(value, str):
                word = value.strip().lower()
                if word in _TRUE:
                    return True
                if word in _FALSE:
                    return False
                raise ValueError(value)
            return bool(value)
        if kind is int:
            if isinstance(value, bool):
                return int(value)
            if isinstance(value, int):
                return value
            if isinstance(value, float):
                if value.is_integer():
                    return int(value)
                raise ValueError(value)
            if isinstance(value, str):
                return int(value.strip())
            return int(value)
        if kind is float:
            return float(value.strip() if isinstance(value, str) else value)
        if kind is Number:
            if isinstance(value, bool):
                return int(value)
            if isinstance(value, int | float):
                return value
            text = str(value).strip()
            try:
                return int(text)
            except ValueError:
                return float(text)
        if kind is tuple:
            if isinstance(value, str):
                return tuple(part.strip() for part in value.split(",") if part.strip())
            return tuple(value)
        if kind is dict:
            if isinstance(value, str):
                value = json.loads(value) if value.strip() else {}
            if not isinstance(value, dict):
                raise ValueError(value)
            return value
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a valid {kind.__name__} (tenant-backups setting): {exc}") from None
    if kind is str and isinstance(value, os.PathLike):
        return os.fspath(value)  # BACKUPS_LOCAL_ROOT, BACKUPS_SPOOL_DIR given as a Path
    return value  # other str settings as given (an import string's object itself, ...)


class BackupsSettings:
    """The BACKUPS_* settings by attribute: the project's value brought to its type, else the default.

    An unknown name raises AttributeError naming it, so a typo fails where it is read instead of reading None.
    """

    def __init__(self, defaults: dict[str, Any] | None = None) -> None:
        self.defaults = DEFAULTS if defaults is None else defaults
        self._cache: dict[str, tuple[Any, Any]] = {}  # name -> (the project's raw value, what it reads as)

    def __getattr__(self, name: str) -> Any:
        if name not in self.defaults:
            if name.startswith("_"):
                raise AttributeError(name)  # copy, pickle and friends probing for dunders
            raise AttributeError(f"unknown tenant-backups setting {name!r}: backups.conf.DEFAULTS has no such name")
        raw = getattr(settings, name, _MISSING)
        cached = self._cache.get(name)
        if cached is not None and cached[0] is raw:
            return cached[1]
        value = self._resolve(name, self.defaults[name] if raw is _MISSING else raw)
        self._cache[name] = (raw, value)
        return value

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.defaults))

    def _resolve(self, name: str, value: Any) -> Any:
        value = _coerce(name, value, self.defaults[name])
        if name in IMPORT_STRINGS and isinstance(value, str) and value:
            try:
                return import_string(value)
            except ImportError as exc:
                raise ImportError(f"{name}={value!r} cannot be imported (tenant-backups setting): {exc}") from exc
        return value

    def reload(self) -> None:
        """Forget every converted value (the next read converts the project's value again)."""
        self._cache.clear()


backups_settings = BackupsSettings()


def _reload_backups_settings(*, setting: str, **kwargs: Any) -> None:
    if setting in backups_settings.defaults:
        backups_settings.reload()


setting_changed.connect(_reload_backups_settings, dispatch_uid="backups.conf.reload")


def get(name: str) -> Any:
    """Deprecated (kept for one release): read `backups_settings.<name>` instead.

    A BACKUPS_* setting as the project gave it, falling back to the app's default (KeyError for an unknown name).
    """
    warnings.warn(f"backups.conf.get({name!r}) is deprecated: read backups.conf.backups_settings.{name}",
                  DeprecationWarning, stacklevel=2)
    return getattr(settings, name, DEFAULTS[name])


def age_recipients() -> list[str]:
    """The age public keys backups are encrypted to (empty: no client-side encryption)."""
    from backups.core.encryption import parse_recipients

    return parse_recipients(backups_settings.BACKUPS_AGE_RECIPIENTS)


def default_encryption() -> str:
    """'age' when recipients are configured, else ''."""
    return "age" if age_recipients() else ""


def local_root(setting: str = "BACKUPS_LOCAL_ROOT") -> Path:
    """The local-folder storage root (or the copy target's, BACKUPS_COPY_LOCAL_ROOT), absolute."""
    root = Path(getattr(backups_settings, setting))
    return root if root.is_absolute() else Path(settings.BASE_DIR) / root


def copy_setting_name(name: str) -> str:
    """The copy target's setting mirroring the primary's `name` (AWS_S3_SSE -> BACKUPS_COPY_AWS_S3_SSE)."""
    return COPY_PREFIX + name.removeprefix("BACKUPS_")
