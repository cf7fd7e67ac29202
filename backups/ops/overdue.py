"""Telling ops when automatic backups fall behind: once when a tenant becomes overdue, once when it recovers."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.utils import timezone
from django_tenants.utils import get_tenant_model

from backups.catalog.alerts import alert_ops
from backups.catalog.selectors import STALLED, STUCK, OverdueTenant, overdue_tenants
from backups.ops.health import broker_trouble

logger = logging.getLogger(__name__)


@dataclass
class OverdueCheck:
    """What one check found: every overdue tenant, and which of them changed since the last check."""

    overdue: list[OverdueTenant] = field(default_factory=list)
    newly_overdue: list[OverdueTenant] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    cause: str = ""  # what is likely wrong, when the broker is (see likely_cause)


def likely_cause(overdue: list[OverdueTenant]) -> str:
    """The broker's trouble, when tenants are behind because nothing started or finished ('' otherwise).

    Slots never claimed or never finished are what a broker refusing writes looks like from the catalog; the
    broker is asked only then, so a quiet check costs no round trip.
    """
    if not any(item.reason in (STALLED, STUCK) for item in overdue):
        return ""
    return broker_trouble()


def overdue_check(*, now: datetime | None = None) -> OverdueCheck:
    """Find overdue tenants, mail the project's ADMINS about the changes, then mark who was told.

    `backup_overdue_since` on the tenant remembers who was already reported, so a check every few minutes
    sends one mail when a tenant falls behind and one when it is back on time, not one per check; a mail
    that could not be sent is tried again by the next check. Every check logs a warning per overdue
    tenant, for log-based alerting.
    """
    now = now or timezone.now()
    Tenant = get_tenant_model()
    result = OverdueCheck(overdue=overdue_tenants(now=now))
    result.cause = likely_cause(result.overdue)
    overdue_ids = {o.tenant_id for o in result.overdue}
    flagged = dict(Tenant.objects.filter(backup_overdue_since__isnull=False).values_list("pk", "schema_name"))
    result.newly_overdue = [o for o in result.overdue if o.tenant_id not in flagged]
    back = set(flagged) - overdue_ids
    result.recovered = sorted(flagged[pk] for pk in back)
    for item in result.overdue:
        logger.warning("backup overdue: %s", item.describe())
    if result.cause:
        logger.error("backups are overdue and %s", result.cause)
    if (result.newly_overdue or result.recovered) and not _mail(result):
        return result  # not marked: the next check tells them again
    with transaction.atomic():
        Tenant.objects.filter(pk__in=[o.tenant_id for o in result.newly_overdue]).update(backup_overdue_since=now)
        Tenant.objects.filter(pk__in=back).update(backup_overdue_since=None)
    return result


def _mail(result: OverdueCheck) -> bool:
    lines = []
    if result.newly_overdue:
        lines.append(f"{len(result.newly_overdue)} tenant(s) fell behind on their automatic backups:")
        lines += [f"  {item.describe()}" for item in result.newly_overdue]
    if result.recovered:
        lines.append(f"No longer overdue: {', '.join(result.recovered)}.")
    lines.append(f"Overdue now: {len(result.overdue)} tenant(s).")
    if result.cause:
        lines.append(f"Likely cause: {result.cause}")
    subject = (f"{len(result.newly_overdue)} tenant(s) overdue for backup" if result.newly_overdue
               else f"{len(result.recovered)} tenant(s) no longer overdue for backup")
    return alert_ops(subject, "\n".join(lines))
