"""The demo's clinical data (a tenant app)."""

from django.apps import AppConfig


class ClinicConfig(AppConfig):
    """Patients, appointments, treatments and invoices of one clinic."""

    name = "clinic"
    default_auto_field = "django.db.models.BigAutoField"
