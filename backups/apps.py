"""App config for the reusable backups app."""

from django.apps import AppConfig


class BackupsConfig(AppConfig):
    """Per-tenant scheduled backups for django-tenants projects."""

    name = "backups"
    verbose_name = "Tenant backups"
    default_auto_field = "django.db.models.BigAutoField"
