"""A clone: a new tenant (its own identity, its own domain) made from a backup, for staging or support.

One transaction on Django's connection: the tenant row (the project's tenant model, a fresh `tenant_uid`, the
schedule disabled) and its domain are created, the verified backup is loaded beside its origin under the new
schema name (backups.restore.side), the owners and grants the manifest recorded are put back, API tokens copied
from the origin are removed (they are the origin's credentials), and BACKUPS_CLONE_ANONYMIZER runs with the
clone's schema as the current one. Only then does anything commit: an anonymizer that raises leaves no clone.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, models, transaction
from django_tenants.utils import get_public_schema_name, get_tenant_domain_model, get_tenant_model, schema_context

from backups.catalog.records import backup_event_create
from backups.catalog.sources import open_backup_or_copy
from backups.conf import backups_settings
from backups.core.errors import BackupError, RestoreFailed
from backups.core.timetable import DISABLED
from backups.models import BackupEvent, BackupRecord
from backups.postgres import pgtools, privileges
from backups.restore.run import manifest_counts, mark_if_damaged, require_restorable
from backups.restore.side import fresh_session, load_beside, require_side_name

logger = logging.getLogger(__name__)

DOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")
# The tenant's own backup state: a clone starts with none of it (the mixin's defaults: no schedule, no backups).
NOT_COPIED = frozenset({"schema_name", "tenant_uid", "last_backup_at", "next_backup_at", "next_scheduled_backup",
                        "backup_overdue_since"})


@dataclass
class CloneReport:
    """What a clone made."""

    record_id: int
    schema: str
    domain: str
    tenant_id: Any = None
    tenant_uid: str = ""
    anonymizer: str = ""
    tokens_removed: int = 0
    row_counts: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    message: str = ""


def domain_refusal(domain: str) -> str | None:
    """Why `domain` cannot be the clone's (None when it can): a host name, in no tenant's use."""
    if not isinstance(domain, str) or not DOMAIN.fullmatch(domain):
        return f"{domain!r} is not a host name (lowercase letters, digits, dots and hyphens)."
    if get_tenant_domain_model().objects.filter(domain=domain).exists():
        return f"The domain {domain} is already in use by a tenant; choose another."
    return None


def _tenant_values(record: BackupRecord, values: dict[str, Any]) -> dict[str, Any]:
    """The new tenant's fields: the origin tenant's own (its name and the like, when it still exists) under
    `values`, never its identity, schema or backup state."""
    Tenant = get_tenant_model()
    origin = Tenant.objects.filter(tenant_uid=record.tenant_uid).first()
    copied: dict[str, Any] = {}
    if origin is not None:
        for f in Tenant._meta.concrete_fields:
            if (f.primary_key or f.name in NOT_COPIED or f.name.startswith("backup_")
                    or getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)):
                continue
            copied[f.attname] = getattr(origin, f.attname)
    unknown = [name for name in values if name in NOT_COPIED or not _is_field(Tenant, name)]
    if unknown:
        raise RestoreFailed(f"{', '.join(sorted(unknown))}: not a field a clone's tenant may be given.")
    return {**copied, **values}


def _is_field(model: type[models.Model], name: str) -> bool:
    try:
        return model._meta.get_field(name).concrete
    except Exception:  # noqa: BLE001 - FieldDoesNotExist and friends: not a field
        return False


def _anonymizer() -> Callable[..., Any] | None:
    value = backups_settings.BACKUPS_CLONE_ANONYMIZER
    if not value:
        return None
    if not callable(value):
        raise RestoreFailed(f"BACKUPS_CLONE_ANONYMIZER={value!r} is not a callable.")
    return value


def _remove_tokens(schema: str) -> int:
    """Delete DRF API tokens the backup carried into the clone's schema: they are the origin's credentials."""
    if not apps.is_installed("rest_framework.authtoken"):
        return 0
    from rest_framework.authtoken.models import Token

    table = f"{pgtools.quote_ident(schema)}.{pgtools.quote_ident(Token._meta.db_table)}"
    with connection.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", [table])
        if cur.fetchone()[0] is None:
            return 0
        cur.execute(f"DELETE FROM {table}")
        return cur.rowcount


def _anonymize(anonymizer: Callable[..., Any], *, schema: str, tenant: Any, record: BackupRecord) -> None:
    """Run the anonymizer with the clone's schema as the current one; whatever it raises ends the clone."""
    try:
        with schema_context(schema), transaction.atomic():
            anonymizer(schema=schema, tenant=tenant, record=record)
    except BackupError:
        raise
    except Exception as exc:  # noqa: BLE001 - the project's code: any failure means no clone
        name = getattr(anonymizer, "__qualname__", repr(anonymizer))
        raise RestoreFailed(f"The anonymizer {name} failed ({type(exc).__name__}: {exc}); no clone was made.") from None


def clone_tenant(*, record: BackupRecord, schema: str, domain: str, values: dict[str, Any] | None = None,
                 anonymize: bool = True, actor: dict | None = None) -> CloneReport:
    """Make the new tenant `schema` (domain `domain`) from the backup; see the module's docstring. `values` sets
    tenant fields (e.g. a name) over those copied from the origin tenant. Refuses, before anything changes, a
    backup that is not restorable, a schema name in use or a tenant's, a domain in use or not a host name."""
    require_restorable(record)
    require_side_name(schema)
    refusal = domain_refusal(domain)
    if refusal:
        raise RestoreFailed(refusal)
    anonymizer = _anonymizer() if anonymize else None
    Tenant, Domain = get_tenant_model(), get_tenant_domain_model()
    counts = manifest_counts(record)
    report = CloneReport(record.pk, schema, domain,
                         anonymizer=getattr(anonymizer, "__qualname__", "") if anonymizer else "")
    try:
        with schema_context(get_public_schema_name()):
            tenant = Tenant(**_tenant_values(record, values or {}), schema_name=schema, backup_schedule=DISABLED)
            tenant.auto_create_schema = False  # the backup makes the schema; it must not be migrated empty first
            try:
                tenant.full_clean(exclude=["tenant_uid"])
            except ValidationError as exc:
                raise RestoreFailed(f"The clone's tenant is not valid: {_errors(exc)}") from None
            with pgtools.connect() as check:
                privileges.require_roles(check.cursor(), record.manifest)
            with open_backup_or_copy(record) as (backup, _source), transaction.atomic():
                tenant.save()
                Domain.objects.create(tenant=tenant, domain=domain, is_primary=True)
                found = load_beside(record=record, backup=backup, into=schema)
                with connection.cursor() as cur:
                    privileges.apply(cur, schema, record.manifest)
                report.tokens_removed = _remove_tokens(schema)
                if anonymizer is not None:
                    _anonymize(anonymizer, schema=schema, tenant=tenant, record=record)
    except BackupError as exc:
        mark_if_damaged(record, exc)
        backup_event_create(record=record, action=BackupEvent.Action.CLONE, actor=actor,
                            details={"ok": False, "schema": schema, "domain": domain, "error": str(exc)[:500]})
        raise
    except DatabaseError as exc:
        raise RestoreFailed(f"The clone was not made, nothing was changed: {exc}".strip()) from None
    finally:
        fresh_session()
    report.tenant_id, report.tenant_uid = tenant.pk, str(tenant.tenant_uid)
    report.row_counts = {t: (n, found.get(t)) for t, n in counts.items()}
    scrubbed = f", anonymized by {report.anonymizer}" if anonymizer else ", not anonymized"
    report.message = (f"Tenant {schema} ({domain}) cloned from backup {record.pk} of {record.schema_name}{scrubbed}; "
                      "its automatic backups are disabled.")
    backup_event_create(record=record, action=BackupEvent.Action.CLONE, actor=actor,
                        details={"ok": True, "schema": schema, "domain": domain, "tenant_uid": report.tenant_uid,
                                 "anonymizer": report.anonymizer, "tokens_removed": report.tokens_removed})
    return report


def _errors(exc: ValidationError) -> str:
    if hasattr(exc, "message_dict"):
        return "; ".join(f"{name}: {' '.join(messages)}" for name, messages in exc.message_dict.items())
    return " ".join(exc.messages)
