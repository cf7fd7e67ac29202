"""The demo's tenant app (shared)."""

from django.apps import AppConfig


class TenantsConfig(AppConfig):
    """Clinics and their domains."""

    name = "tenants"
    default_auto_field = "django.db.models.BigAutoField"
