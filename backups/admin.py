"""Ops' view of the fleet: every tenant's backups and the audit trail, across schemas."""

from django.contrib import admin, messages
from django.db import transaction

from .models import BackupEvent, BackupRecord, RestoreJob
from .scheduling import DISABLED


class OwnerFilter(admin.SimpleListFilter):
    """Backups of live tenants, or those kept after their tenant was deleted."""

    title = "tenant"
    parameter_name = "owner"

    def lookups(self, request, model_admin):
        return (("live", "Live tenant"), ("deleted", "Deleted tenant"))

    def queryset(self, request, queryset):
        if self.value() == "live":
            return queryset.filter(tenant__isnull=False)
        if self.value() == "deleted":
            return queryset.filter(tenant__isnull=True)
        return queryset


@admin.register(BackupRecord)
class BackupRecordAdmin(admin.ModelAdmin):
    """Backups of every tenant, filterable by status, type and format."""

    list_display = ("id", "schema_name", "owner", "file_name", "status", "backup_type", "format", "size",
                    "created_at", "finished_at", "attempts", "damaged_at")
    list_filter = ("status", OwnerFilter, "backup_type", "format", "compression", "storage_backend")
    search_fields = ("schema_name", "file_name", "storage_key", "task_id", "error", "tenant_uid")

    @admin.display(description="owner")
    def owner(self, record: BackupRecord) -> str:
        if record.tenant_id is not None:
            return "live tenant"
        when = f" on {record.tenant_deleted_at:%Y-%m-%d}" if record.tenant_deleted_at else ""
        return f"deleted tenant{when}"
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in BackupRecord._meta.fields]
    actions = ("retry_failed",)

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Retry the selected failed backups")
    def retry_failed(self, request, queryset) -> None:
        from tasks.backups import run_backup

        ids = list(queryset.filter(status=BackupRecord.Status.FAILED).values_list("pk", flat=True))
        with transaction.atomic():
            BackupRecord.objects.filter(pk__in=ids).update(status=BackupRecord.Status.QUEUED, error="")
            for pk in ids:
                transaction.on_commit(lambda pk=pk: run_backup.delay(pk))
        messages.info(request, f"{len(ids)} backups queued again.")


@admin.register(BackupEvent)
class BackupEventAdmin(admin.ModelAdmin):
    """Who did what to which backup; read-only."""

    list_display = ("created_at", "schema_name", "action", "record", "ip_address")
    list_filter = ("action",)
    search_fields = ("schema_name",)
    readonly_fields = [f.name for f in BackupEvent._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(RestoreJob)
class RestoreJobAdmin(admin.ModelAdmin):
    """Restores and verify drills (asked for through the API, or scheduled); read-only."""

    list_display = ("id", "schema_name", "mode", "status", "record", "created_at", "finished_at")
    list_filter = ("mode", "status")
    search_fields = ("schema_name", "error")
    readonly_fields = [f.name for f in RestoreJob._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


class OverdueFilter(admin.SimpleListFilter):
    """Tenants the overdue check last found behind (backup_overdue_since set)."""

    title = "backups overdue"
    parameter_name = "backup_overdue"

    def lookups(self, request, model_admin):
        return (("yes", "Overdue"), ("no", "On time"))

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(backup_overdue_since__isnull=False)
        if self.value() == "no":
            return queryset.filter(backup_overdue_since__isnull=True)
        return queryset


class TenantBackupAdminMixin:
    """For a host project's tenant admin: schedule columns, an overdue filter, and bulk actions for operators."""

    list_filter = ("backup_schedule", OverdueFilter)
    readonly_fields = ("next_backup_at", "last_backup_at", "backup_overdue_since")
    actions = ("back_up_now", "disable_automatic_backups")

    @admin.action(description="Back up the selected tenants now")
    def back_up_now(self, request, queryset) -> None:
        from .services.operator import operator_backups_create

        records, busy = operator_backups_create(tenants=queryset, actor={"admin": request.user.get_username()})
        messages.info(request, f"{len(records)} backups queued on the priority queue."
                      + (f" Already running, skipped: {', '.join(busy)}." if busy else ""))

    @admin.action(description="Disable automatic backups of the selected tenants")
    def disable_automatic_backups(self, request, queryset) -> None:
        count = queryset.update(backup_schedule=DISABLED, next_backup_at=None, backup_overdue_since=None)
        messages.info(request, f"Automatic backups disabled for {count} tenants.")
