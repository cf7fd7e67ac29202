"""Clinics in the Django admin, with their backup schedule (the public tenant is not listed)."""

from django.contrib import admin
from django_tenants.admin import TenantAdminMixin

from backups.admin import TenantBackupAdminMixin

from .models import Clinica, Domain


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0


@admin.register(Clinica)
class ClinicaAdmin(TenantBackupAdminMixin, TenantAdminMixin, admin.ModelAdmin):
    """Clinics, when each is next due, when each last succeeded, and which are overdue."""

    list_display = ("schema_name", "nombre", "backup_state", "last_backup_column", "next_backup_column",
                    "backups_link")
    search_fields = ("schema_name", "nombre")
    inlines = (DomainInline,)
