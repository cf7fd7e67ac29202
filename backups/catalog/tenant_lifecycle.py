"""A tenant's identity across its life: a deleted tenant's backups stay bound to it, and the users a new tenant
finds in a reused schema are refused as an earlier tenant's."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context

from backups.models import BackupRecord, InheritedUser

logger = logging.getLogger(__name__)


def tenant_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    """Stamp the tenant's records before the foreign key is cleared: they stay bound to its identity,
    which no later tenant has, and BACKUPS_DELETED_TENANT_KEEP_DAYS counts from now."""
    uid = getattr(instance, "tenant_uid", None)
    if uid is not None:
        BackupRecord.objects.filter(tenant_uid=uid, tenant_deleted_at__isnull=True).update(
            tenant_deleted_at=timezone.now())


def _user_table_exists(schema: str) -> bool:
    table = get_user_model()._meta.db_table
    with connection.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", ['"{}"."{}"'.format(schema.replace('"', '""'), table.replace('"', '""'))])
        return cur.fetchone()[0] is not None


def tenant_created(sender: Any, instance: Any, created: bool = False, **kwargs: Any) -> None:
    """post_save of the tenant model: a new tenant whose schema already exists (an earlier tenant's, kept by
    auto_drop_schema = False) inherits that tenant's users and tokens; record them so the API refuses them.

    django-tenants sends post_save before it creates the schema, so a schema found here was not made for
    this tenant, and every user in it was created under another identity.
    """
    uid, schema = getattr(instance, "tenant_uid", None), getattr(instance, "schema_name", "")
    if not created or uid is None or schema in ("", get_public_schema_name()) or not _user_table_exists(schema):
        return  # the public tenant's "users" are the operators, and the API is not served on its domain
    User = get_user_model()
    with schema_context(schema):
        users = list(User.objects.values_list("pk", User.USERNAME_FIELD))
    InheritedUser.objects.bulk_create(
        [InheritedUser(tenant_uid=uid, schema_name=schema, user_pk=str(pk), username=str(name)[:255])
         for pk, name in users], ignore_conflicts=True)
    if users:
        logger.warning("tenant %s was created on the existing schema %s: its %d users belong to an earlier tenant "
                       "and are refused by the API (see backups.InheritedUser)", uid, schema, len(users))


def tenant_user_inherited(*, tenant: Any, user: Any) -> bool:
    """Whether the user was in the tenant's schema before the tenant existed (an earlier tenant's user)."""
    uid = getattr(tenant, "tenant_uid", None)
    if uid is None or user is None or user.pk is None:
        return False
    return InheritedUser.objects.filter(tenant_uid=uid, user_pk=str(user.pk)).exists()
