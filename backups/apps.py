"""App config for the reusable backups app."""

from django.apps import AppConfig
from django.db.models.signals import post_save, pre_delete, pre_save


class BackupsConfig(AppConfig):
    """Per-tenant scheduled backups for django-tenants projects."""

    name = "backups"
    verbose_name = "Tenant backups"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django_tenants.utils import get_tenant_model

        from backups.catalog.tenant_lifecycle import tenant_created, tenant_deleted

        from .api.revocation import revoke_on_credential_change

        pre_delete.connect(tenant_deleted, sender=get_tenant_model(), dispatch_uid="backups.tenant_deleted")
        post_save.connect(tenant_created, sender=get_tenant_model(), dispatch_uid="backups.tenant_created")
        pre_save.connect(revoke_on_credential_change, sender=get_user_model(),
                         dispatch_uid="backups.revoke_on_credential_change")
