"""The demo's tenant model: one dental clinic per PostgreSQL schema."""

from django.core.validators import RegexValidator
from django.db import models
from django_tenants.models import DomainMixin, TenantMixin

from backups.schedule.mixins import TenantBackupScheduleMixin

schema_name_validator = RegexValidator(
    r"^[a-z][a-z0-9_]{0,48}$",
    "Schema names are lowercase letters, digits and underscores, starting with a letter.",
)


class Clinica(TenantBackupScheduleMixin, TenantMixin):
    """A clinic: a tenant with its own schema and its own backup schedule."""

    nombre = models.CharField("name", max_length=200, help_text="The clinic's display name.")
    created_at = models.DateTimeField("created at", auto_now_add=True)

    auto_create_schema = True
    auto_drop_schema = False

    class Meta:
        verbose_name = "clinic"
        verbose_name_plural = "clinics"

    def __str__(self) -> str:
        return f"{self.nombre} ({self.schema_name})"

    def clean(self) -> None:
        super().clean()
        if self.schema_name != "public":
            schema_name_validator(self.schema_name)


class Domain(DomainMixin):
    """A host name that routes to a clinic."""
