"""Credentials revoked when a user's password changes or the user is deactivated (pre_save of the user model).

Kept apart from backups.api.tokens, with its imports inside the handler, so connecting it at start-up
(apps.ready) costs no import of DRF or simplejwt: management commands and workers start faster.
"""

from __future__ import annotations

from django.apps import apps
from django.db import connection
from django_tenants.utils import get_public_schema_name


def revoke_on_credential_change(sender, instance, **kwargs) -> None:
    """pre_save of the user model: a new password or a deactivation revokes the user's DRF tokens and JWTs.

    JWTs stop working through their `cred` claim whatever the path; this also deletes DRF tokens and
    blacklists outstanding refresh tokens (both live in tenant schemas, beside the users).
    """
    if instance.pk is None or connection.schema_name == get_public_schema_name():
        return
    fields = [f for f in ("password", "is_active") if any(x.name == f for x in sender._meta.concrete_fields)]
    before = sender.objects.filter(pk=instance.pk).values(*fields).first() if fields else None
    if before is None:
        return
    deactivated = before.get("is_active", True) and not getattr(instance, "is_active", True)
    if before.get("password") == getattr(instance, "password", None) and not deactivated:
        return
    if apps.is_installed("rest_framework.authtoken"):
        from rest_framework.authtoken.models import Token as DrfToken

        DrfToken.objects.filter(user_id=instance.pk).delete()
    if not apps.is_installed("rest_framework_simplejwt.token_blacklist"):
        return
    from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

    outstanding = OutstandingToken.objects.filter(user_id=instance.pk).exclude(blacklistedtoken__isnull=False)
    BlacklistedToken.objects.bulk_create([BlacklistedToken(token=row) for row in outstanding],
                                         ignore_conflicts=True)
