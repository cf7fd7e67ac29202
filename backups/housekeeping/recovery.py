"""Recovery from the storage alone: an empty database, the same storage settings and keys, and the deployment back.

The storage is self-describing: every backup has a manifest signed by this deployment beside it (the root of
trust once the catalog is gone: an object is believed only through a manifest this deployment signed, and its
bytes only once their size and SHA-256 match it). In order:

1. survey: list the storage, keep each backup whose manifest is trusted (reconcile's checks), report the others;
2. the public schema: the newest good public-schema backup is restored (an older one when the newest is damaged),
   then migrated to this code; with none, the shared tables are migrated empty and the run says so;
3. tenants whose identity has backups but no tenant row (none in the public backup, or created after it) are
   recreated from their manifests' identity and schema (no name, no domain: the run says so);
4. the catalog is rebuilt from the signed manifests (reconcile: records since the public backup are imported,
   records whose object is gone are failed);
5. every tenant without a schema gets its newest good backup, over the dump slots in parallel; a backup that
   fails its check is marked damaged and the next older one is tried; a tenant that cannot be restored is
   reported and marked (a failed restore job), and the others go on.

Every tenant's restore is one transaction, so a tenant is either restored or has no schema; running it again
resumes: the public schema is kept once it holds tenants, and only tenants without a schema are restored.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime

from django.core.management import call_command
from django.db import connection, connections
from django.utils.dateparse import parse_datetime
from django_tenants.utils import get_public_schema_name, get_tenant_model

from backups.catalog.alerts import alert_ops
from backups.catalog.manifest import MANIFEST_SUFFIX, manifest_key
from backups.catalog.records import backup_record_mark_failed, backup_record_mark_succeeded
from backups.catalog.selectors import schema_exists
from backups.conf import backups_settings
from backups.core.errors import BackupError, StoredObjectDamaged, VerificationFailed
from backups.core.naming import PUBLIC_UID
from backups.housekeeping.reconcile import storage_reconcile, trusted_manifest
from backups.models import BackupRecord, RestoreJob
from backups.postgres.locks import dump_slot
from backups.restore.jobs import restore_failure_message, restore_job_fail, restore_job_recorded
from backups.restore.public_schema import public_schema_restore
from backups.restore.run import restore_replace
from backups.storage import Storage, StorageError, get_storage

logger = logging.getLogger(__name__)
ACTOR = {"recover_deployment": True}
SURVEY_READERS = 8  # manifests read at once: on S3 each is a request of a few ms
Say = Callable[[str], None]


class RecoveryRefused(BackupError):
    """The run cannot start (storage unreadable, nothing trusted in it); nothing was changed."""


@dataclass(frozen=True)
class StoredBackup:
    """One stored backup whose signed manifest this deployment trusts."""

    key: str
    manifest: dict

    @property
    def created_at(self) -> datetime:
        return parse_datetime(self.manifest["created_at"])

    @property
    def uid(self) -> uuid.UUID:
        return uuid.UUID(self.manifest["tenant_uid"])

    @property
    def schema(self) -> str:
        return self.manifest["schema"]


@dataclass
class Survey:
    """What the storage holds: trusted backups of the public schema and of each tenant identity, newest first."""

    objects: int = 0
    public: list[StoredBackup] = field(default_factory=list)
    tenants: dict[uuid.UUID, list[StoredBackup]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # key -> why its manifest is not believed

    @property
    def trusted(self) -> dict[str, StoredBackup]:
        return {b.key: b for b in self.public + [b for bs in self.tenants.values() for b in bs]}


@dataclass
class TenantOutcome:
    """One tenant's restore."""

    schema: str
    ok: bool
    message: str
    record_id: int | None = None
    seconds: float = 0.0


@dataclass
class Recovery:
    """What a run found and did (or, in a dry run, would do)."""

    survey: Survey
    public: str = ""  # one sentence: what happened to the public schema
    public_ok: bool = True
    created: list[str] = field(default_factory=list)  # tenants recreated from their manifests' identities
    not_created: dict[str, str] = field(default_factory=dict)  # schema -> why no tenant was recreated for it
    already: list[str] = field(default_factory=list)  # tenants whose schema exists (restored before: resumed)
    outcomes: list[TenantOutcome] = field(default_factory=list)
    planned: dict[str, str] = field(default_factory=dict)  # dry run: schema -> the backup it would restore

    @property
    def failed(self) -> list[TenantOutcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def ok(self) -> bool:
        """Whether everything the storage could give back was given back."""
        return self.public_ok and not self.failed and not self.not_created and not self.survey.refused


# --- 1. the survey -----------------------------------------------------------------------------------------

def storage_survey(storage: Storage) -> Survey:
    """Every backup in the storage whose manifest this deployment signed and which it describes exactly."""
    try:
        objects = {o.key: o for o in storage.list("")}
    except StorageError as exc:
        raise RecoveryRefused(f"The storage cannot be listed ({exc}); check the storage settings "
                              f"(BACKUPS_STORAGE={storage.name}, its bucket and credentials).") from None
    survey = Survey(objects=len(objects))
    backups = [(key, obj) for key, obj in objects.items()
               if not key.endswith(MANIFEST_SUFFIX) and manifest_key(key) in objects and key.count("/") == 2]
    with ThreadPoolExecutor(max_workers=SURVEY_READERS, thread_name_prefix="survey") as pool:  # one GET each
        checked = pool.map(lambda item: trusted_manifest(storage, item[0].split("/", 1)[0], item[0], item[1].size),
                           backups)
        checked = list(checked)
    for (key, _obj), (manifest, why) in zip(backups, checked, strict=True):
        if manifest is None:
            survey.refused[key] = why
            continue
        backup = StoredBackup(key, manifest)
        if backup.schema == get_public_schema_name():
            if backup.uid == PUBLIC_UID:
                survey.public.append(backup)
        else:
            survey.tenants.setdefault(backup.uid, []).append(backup)
    newest_first = lambda b: (b.created_at, b.manifest.get("record_id") or 0)  # noqa: E731
    survey.public.sort(key=newest_first, reverse=True)
    for backups in survey.tenants.values():
        backups.sort(key=newest_first, reverse=True)
    if not survey.public and not survey.tenants:
        if survey.refused:
            raise RecoveryRefused(
                f"None of the {len(survey.refused)} backups in the storage has a manifest this deployment signed "
                "(wrong bucket, or another BACKUPS_MANIFEST_KEY?); nothing was changed.")
        raise RecoveryRefused(f"The storage ({storage.name}) holds no backups (wrong bucket or prefix?); nothing was "
                              "changed.")
    return survey


# --- 2. the public schema ----------------------------------------------------------------------------------

def _tenant_table() -> str:
    return get_tenant_model()._meta.db_table


def deployment_tenants() -> int | None:
    """Tenants in the database (the public tenant left out); None when the tenant table does not exist yet."""
    with connection.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", [f"public.{_tenant_table()}"])
        if cur.fetchone()[0] is None:
            return None
    return get_tenant_model().objects.exclude(schema_name=get_public_schema_name()).count()


def _migrate_shared() -> None:
    call_command("migrate_schemas", shared=True, interactive=False, verbosity=0)


def _restore_public(storage: Storage, survey: Survey, result: Recovery, say: Say) -> None:
    """The newest good public-schema backup, else the shared tables migrated empty."""
    for backup in survey.public:
        say(f"public schema: restoring {backup.key} (taken {backup.manifest['created_at']})")
        try:
            public_schema_restore(storage=storage, key=backup.key, manifest=backup.manifest)
        except (StoredObjectDamaged, VerificationFailed, BackupError) as exc:
            say(f"public schema: {backup.key} could not be restored: {exc}; trying an older one")
            continue
        connection.close()  # the tables changed under Django's connection
        _migrate_shared()
        _close_interrupted(survey)
        result.public = f"restored from {backup.key} (taken {backup.manifest['created_at']})"
        return
    _migrate_shared()
    result.public_ok = False
    result.public = ("NOT restored: " + ("every public-schema backup failed its check"
                                         if survey.public else "the storage holds no public-schema backup")
                     + "; tenants are recreated from their backups' identities (names, domains, operators and "
                       "beat's entries are lost; run setup_backup_schedule and ensure_public_tenant)")


def _close_interrupted(survey: Survey) -> None:
    """Records and jobs the public backup caught queued or running (its own record among them): a backup whose
    object and signed manifest naming it are in the storage succeeded; the rest died with the database."""
    trusted = survey.trusted
    for record in BackupRecord.objects.active():
        stored = trusted.get(record.storage_key)
        if stored is not None and stored.manifest.get("record_id") == record.pk:
            m = stored.manifest
            backup_record_mark_succeeded(record=record, size=m["size"], sha256=m["sha256"],
                                         plain_size=m.get("plain_size") or 0,
                                         plain_sha256=m.get("plain_sha256", ""), manifest=m)
        else:
            backup_record_mark_failed(record=record, error="The database was lost while this backup was queued or "
                                                           "running; closed by recover_deployment.")
    for job in RestoreJob.objects.active():
        restore_job_fail(job=job, error="The database was lost while this job ran; closed by recover_deployment.")


# --- 3. tenants known only to the storage ------------------------------------------------------------------

def _recreate_tenants(survey: Survey, result: Recovery, say: Say, *, dry_run: bool) -> None:
    """A tenant row for every identity the storage has backups of and the database does not know (not even as a
    deleted tenant's records); when two identities claim one schema, the one with the newest backup."""
    Tenant = get_tenant_model()
    known: set[uuid.UUID] = set()
    taken: set[str] = set()
    if deployment_tenants() is not None:
        known = set(Tenant.objects.values_list("tenant_uid", flat=True)) | set(
            BackupRecord.objects.filter(tenant__isnull=True).values_list("tenant_uid", flat=True))
        taken = set(Tenant.objects.values_list("schema_name", flat=True))
    for uid, backups in sorted(survey.tenants.items(), key=lambda kv: kv[1][0].created_at, reverse=True):
        if uid in known:
            continue
        schema = backups[0].schema
        if schema in taken:
            result.not_created[schema] = (f"identity {uid} has {len(backups)} backups of {schema}, but the schema "
                                          "belongs to another tenant")
            continue
        taken.add(schema)
        result.created.append(schema)
        if dry_run:
            continue
        tenant = Tenant(schema_name=schema, tenant_uid=uid)
        tenant.auto_create_schema = False  # its backup creates the schema
        tenant.save()
        say(f"{schema}: tenant recreated from its backups' identity {uid} (set its name and domain again)")


# --- 5. the tenants' data ----------------------------------------------------------------------------------

def _restore_tenant(tenant_id: int) -> TenantOutcome:
    """The tenant's newest good backup into its (absent) schema, older ones when a backup fails its check."""
    started = time.monotonic()
    tenant = get_tenant_model().objects.get(pk=tenant_id)
    schema = tenant.schema_name
    candidates = list(BackupRecord.objects.restorable().filter(tenant_uid=tenant.tenant_uid, schema_name=schema)
                      .order_by("-created_at", "-id"))
    tried: list[str] = []
    outcome = TenantOutcome(schema, ok=False, message="")
    try:
        for record in candidates:
            try:
                with dump_slot(backups_settings.BACKUPS_MAX_CONCURRENT_DUMPS,
                               wait_seconds=backups_settings.BACKUPS_DUMP_SLOT_WAIT_SECONDS) as slot:
                    if slot is None:
                        raise BackupError("every dump slot stayed busy (BACKUPS_MAX_CONCURRENT_DUMPS)")
                    restore_replace(schema=schema, record=record, actor=ACTOR, safety_backup=False)
            except (StoredObjectDamaged, VerificationFailed) as exc:
                tried.append(f"{record.file_name}: {exc}")
                continue
            except Exception as exc:  # noqa: BLE001 - one tenant's failure is reported; the others go on
                outcome.message = restore_failure_message(exc)
                outcome.record_id = record.pk
                break
            outcome.ok, outcome.record_id = True, record.pk
            outcome.message = f"restored from {record.file_name}" + (
                f" ({len(tried)} newer backups failed their check)" if tried else "")
            break
        else:
            outcome.message = ("no backup of this identity in the storage" if not candidates else
                               f"all {len(candidates)} backups failed their check: " + "; ".join(tried))
        outcome.seconds = time.monotonic() - started
        restore_job_recorded(tenant=tenant, record=BackupRecord.objects.filter(pk=outcome.record_id).first(),
                             ok=outcome.ok, report={"message": outcome.message, "recover_deployment": True},
                             error="" if outcome.ok else outcome.message, actor=ACTOR)
    finally:
        connections.close_all()  # this thread's own connections
    return outcome


def _restore_tenants(result: Recovery, say: Say, workers: int) -> None:
    Tenant = get_tenant_model()
    todo = []
    for tenant_id, schema in (Tenant.objects.exclude(schema_name=get_public_schema_name())
                              .order_by("schema_name").values_list("pk", "schema_name")):
        (result.already if schema_exists(schema) else todo).append((tenant_id, schema))
    result.already = [schema for _, schema in result.already]
    if result.already:
        say(f"{len(result.already)} tenants already have their schema (restored by an earlier run): kept")
    lock = threading.Lock()
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="recover") as pool:
        futures = {pool.submit(_restore_tenant, tenant_id): schema for tenant_id, schema in todo}
        for done, future in enumerate(as_completed(futures), 1):
            try:
                outcome = future.result()
            except Exception as exc:  # noqa: BLE001 - reported like any other failure
                outcome = TenantOutcome(futures[future], ok=False, message=restore_failure_message(exc))
            with lock:
                result.outcomes.append(outcome)
                say(f"[{done}/{len(todo)}] {outcome.schema}: {'' if outcome.ok else 'FAILED: '}{outcome.message} "
                    f"({outcome.seconds:.1f} s)")


# --- the run -----------------------------------------------------------------------------------------------

def _plan(storage: Storage, survey: Survey, result: Recovery, say: Say) -> None:
    """A dry run: say what a run would do, change nothing."""
    tenants = deployment_tenants()
    if tenants:
        result.public = f"kept: the database already holds {tenants} tenants (a run resumes)"
    elif survey.public:
        newest = survey.public[0]
        result.public = (f"would be restored from {newest.key} (taken {newest.manifest['created_at']}, "
                         f"{newest.manifest.get('row_counts', {}).get(_tenant_table(), '?')} tenants)")
    else:
        result.public_ok = False
        result.public = ("would NOT be restored: the storage holds no public-schema backup; tenants would be "
                         "recreated from their backups' identities")
    if not survey.public or tenants:
        _recreate_tenants(survey, result, say, dry_run=True)
    for backups in survey.tenants.values():
        schema = backups[0].schema
        if tenants and schema_exists(schema):
            continue
        result.planned[schema] = backups[0].key


def deployment_recover(*, dry_run: bool = False, say: Say = logger.info, workers: int | None = None) -> Recovery:
    """Bring the deployment back from the storage (see the module's docstring); RecoveryRefused when it cannot
    start. A dry run reads the storage and the database and changes nothing."""
    storage = get_storage()
    survey = storage_survey(storage)
    result = Recovery(survey)
    say(f"storage ({storage.name}): {survey.objects} objects, {len(survey.public)} public-schema backups, "
        f"{sum(len(b) for b in survey.tenants.values())} backups of {len(survey.tenants)} tenant identities, "
        f"{len(survey.refused)} refused")
    for key, why in sorted(survey.refused.items()):
        say(f"refused {key}: {why}")
    if dry_run:
        _plan(storage, survey, result, say)
        return result
    if deployment_tenants():
        result.public = f"kept: the database already holds {deployment_tenants()} tenants (resuming)"
        _migrate_shared()
    else:
        _restore_public(storage, survey, result, say)
    say(f"public schema: {result.public}")
    _recreate_tenants(survey, result, say, dry_run=False)
    schemas = sorted({b.schema for bs in survey.tenants.values() for b in bs}
                     | ({get_public_schema_name()} if survey.public else set()))
    rebuilt = storage_reconcile(schemas=schemas)
    say(f"catalog: {len(rebuilt.imported)} records rebuilt from signed manifests, {len(rebuilt.missing)} records "
        "whose object is gone marked failed")
    _restore_tenants(result, say, workers or backups_settings.BACKUPS_MAX_CONCURRENT_DUMPS)
    if not result.ok:
        alert_ops("recover_deployment did not recover everything", json.dumps(recovery_summary(result), indent=2))
    return result


def recovery_summary(result: Recovery) -> dict:
    """The run's outcome as data (the command prints it; ops are mailed it when something failed)."""
    return {
        "public_schema": result.public,
        "tenants_restored": sum(o.ok for o in result.outcomes),
        "tenants_failed": {o.schema: o.message for o in result.failed},
        "tenants_kept": len(result.already),
        "tenants_recreated": result.created,
        "tenants_not_recreated": result.not_created,
        "refused_backups": len(result.survey.refused),
    }
