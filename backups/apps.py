"""App config for the reusable backups app."""

from django.apps import AppConfig
from django.db.models.signals import pre_delete


class BackupsConfig(AppConfig):
    """Per-tenant scheduled backups for django-tenants projects."""

    name = "backups"
    verbose_name = "Tenant backups"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django_tenants.utils import get_tenant_model

        from .services.tenant_lifecycle import tenant_deleted

        pre_delete.connect(tenant_deleted, sender=get_tenant_model(), dispatch_uid="backups.tenant_deleted")
