"""Clinics in the Django admin, with their backup schedule."""

from django.contrib import admin
from django_tenants.admin import TenantAdminMixin

from .models import Clinica, Domain


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0


@admin.register(Clinica)
class ClinicaAdmin(TenantAdminMixin, admin.ModelAdmin):
    """Clinics, when each is next due, and when each last succeeded."""

    list_display = ("schema_name", "nombre", "backup_schedule", "next_backup_at", "last_backup_at")
    list_filter = ("backup_schedule",)
    search_fields = ("schema_name", "nombre")
    readonly_fields = ("next_backup_at", "last_backup_at")
    inlines = (DomainInline,)
