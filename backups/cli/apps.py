"""The app config of backups.cli (commands only)."""

from django.apps import AppConfig


class BackupsCliConfig(AppConfig):
    """tenant-backups' commands that share a name with django-tenants' (listed before django_tenants)."""

    name = "backups.cli"
    label = "backups_cli"
    verbose_name = "Tenant backups (commands)"
