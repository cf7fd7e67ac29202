"""The demo's users: they live in each clinic's own schema."""

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Clinic staff accounts with a role."""

    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"
