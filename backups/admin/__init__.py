"""Ops' view of the fleet: every tenant's backups and the audit trail, across schemas."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django_tenants.utils import get_public_schema_name, get_tenant_model

from backups.admin.formatting import human_bytes, human_duration
from backups.backup.enqueue import backups_enqueue
from backups.catalog.progress import progress_of
from backups.catalog.records import backup_records_requeue_failed
from backups.core.errors import BackupError
from backups.core.service_errors import ApiServiceError
from backups.core.timetable import DISABLED
from backups.models import BackupCopy, BackupEvent, BackupRecord, InheritedUser, RestoreJob, SideCopy, TenantKey

STORAGE_LABELS = {"local": "Local folder", "s3": "S3 (or compatible)", "supabase": "Supabase Storage"}
TYPE_SHORT = {BackupRecord.Type.MANUAL: "manual", BackupRecord.Type.AUTOMATIC: "automatic",
              BackupRecord.Type.PRE_RESTORE: "safety copy"}


class TenantFilter(admin.SimpleListFilter):
    """One tenant's backups (the tenants list links here); lists only the chosen tenant, so it stays short
    with 10,000 tenants: pick one from the tenants list or search by schema name."""

    title = "tenant"
    parameter_name = "tenant"

    def lookups(self, request, model_admin):
        value = request.GET.get(self.parameter_name, "")
        if not value.isdigit():
            return ()
        tenant = get_tenant_model().objects.filter(pk=int(value)).values_list("pk", "schema_name").first()
        return ((str(tenant[0]), tenant[1]),) if tenant else ()

    def queryset(self, request, queryset):
        value = self.value()
        if value and value.isdigit():
            return queryset.filter(tenant_id=int(value))
        return queryset


class OwnerFilter(admin.SimpleListFilter):
    """Backups of live tenants, or those kept after their tenant was deleted."""

    title = "tenant still exists"
    parameter_name = "owner"

    def lookups(self, request, model_admin):
        return (("live", "Yes (live tenant)"), ("deleted", "No (tenant deleted)"))

    def queryset(self, request, queryset):
        if self.value() == "live":
            return queryset.filter(tenant__isnull=False)
        if self.value() == "deleted":
            return queryset.filter(tenant__isnull=True)
        return queryset


class StorageFilter(admin.SimpleListFilter):
    """Where the backup is stored, by the backend's name rather than its code."""

    title = "stored in"
    parameter_name = "storage"

    def lookups(self, request, model_admin):
        return tuple(STORAGE_LABELS.items())

    def queryset(self, request, queryset):
        return queryset.filter(storage_backend=self.value()) if self.value() else queryset


class DamagedFilter(admin.SimpleListFilter):
    """Backups whose stored object failed its size or SHA-256 check."""

    title = "integrity"
    parameter_name = "damaged"

    def lookups(self, request, model_admin):
        return (("no", "Intact"), ("yes", "Damaged (failed its check)"))

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(damaged_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(damaged_at__isnull=True)
        return queryset


def _when(value) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M") if value else "-"


@admin.register(BackupRecord)
class BackupRecordAdmin(admin.ModelAdmin):
    """Backups of every tenant, filterable by status, type and format; sizes, durations and progress as
    operators read them; a dashboard of the whole fleet at `dashboard/`."""

    list_display = ("id", "tenant_column", "file_column", "status_column", "progress_column", "size_column",
                    "duration_column", "created_column")
    list_display_links = ("id", "file_column")
    list_filter = ("status", TenantFilter, "backup_type", "format", "compression", StorageFilter, DamagedFilter,
                   OwnerFilter)
    search_fields = ("schema_name", "file_name", "storage_key", "task_id", "error", "tenant_uid")
    list_per_page = 50
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in BackupRecord._meta.fields] + ["size_human", "duration_human",
                                                                      "progress_human"]
    actions = ("retry_failed", "restore_objects")

    def get_urls(self):
        opts = self.model._meta
        return [path("dashboard/", self.admin_site.admin_view(self.dashboard_view),
                     name=f"{opts.app_label}_{opts.model_name}_dashboard")] + super().get_urls()

    def dashboard_view(self, request):
        """The fleet dashboard (backups.admin.dashboard), for anyone who may view backups."""
        from backups.admin.dashboard import dashboard_view

        if not self.has_view_permission(request):
            raise PermissionDenied
        return dashboard_view(request, model_admin=self)

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        """Not a backup a worker may still write (queued or running), as the API refuses it."""
        if obj is not None and obj.is_active:
            return False
        return super().has_delete_permission(request, obj)

    def delete_model(self, request, obj) -> None:
        """Through the API's deletion: the object and its signed manifest go too (see operator_backups_delete)."""
        from backups.admin.operator import operator_backups_delete

        operator_backups_delete(records=[obj], actor={"admin": request.user.get_username()})

    def delete_queryset(self, request, queryset) -> None:
        from backups.admin.operator import operator_backups_delete

        deleted, skipped = operator_backups_delete(records=list(queryset),
                                                   actor={"admin": request.user.get_username()})
        if skipped:
            messages.warning(request, f"{len(skipped)} queued or running backups were not deleted: "
                                      f"{', '.join(map(str, skipped))}.")

    @admin.display(description="tenant", ordering="schema_name")
    def tenant_column(self, record: BackupRecord) -> str:
        if record.tenant_id is not None:
            return record.schema_name
        when = f" {record.tenant_deleted_at:%Y-%m-%d}" if record.tenant_deleted_at else ""
        return format_html('{} <span class="muted">(deleted{})</span>', record.schema_name, when)

    @admin.display(description="file", ordering="file_name")
    def file_column(self, record: BackupRecord) -> str:
        """The file name, and under it what kind of backup it is: type, format, compression, encryption."""
        kind = [TYPE_SHORT.get(record.backup_type, record.backup_type), record.format]
        kind += [record.compression] if record.compression != "none" else []
        kind += [record.encryption] if record.encryption else []
        attempts = f", {record.attempts} attempts" if record.attempts > 1 else ""
        return format_html('{}<br><span class="muted" title="{}">{}{}</span>', record.file_name,
                           record.get_format_display(), " · ".join(kind), attempts)

    @admin.display(description="status", ordering="status")
    def status_column(self, record: BackupRecord) -> str:
        badge = format_html('<span class="backups-status {}">{}</span>', record.status, record.get_status_display())
        if record.damaged_at:
            badge += format_html(' <span class="backups-status damaged" title="failed its check on {}">damaged</span>',
                                 _when(record.damaged_at))
        return badge

    @admin.display(description="size", ordering="size")
    def size_column(self, record: BackupRecord) -> str:
        if record.size is None:
            return "-"
        return format_html('<span class="nowrap" title="{} bytes">{}</span>', f"{record.size:,}",
                           human_bytes(record.size))

    @admin.display(description="duration")
    def duration_column(self, record: BackupRecord) -> str:
        if record.duration_seconds is not None:
            return human_duration(record.duration_seconds)
        if record.status == BackupRecord.Status.RUNNING and record.started_at:
            return format_html('{} <span class="muted">so far</span>',
                               human_duration((timezone.now() - record.started_at).total_seconds()))
        return "-"

    @admin.display(description="progress")
    def progress_column(self, record: BackupRecord) -> str:
        if not record.is_active:
            if record.status == BackupRecord.Status.SUCCEEDED:
                return "done"
            return format_html('<span class="muted">at {}</span>', record.stage) if record.stage else "-"
        from django.template.loader import render_to_string

        return render_to_string("admin/backups/includes/progress.html", {"progress": progress_of(record)})

    @admin.display(description="created", ordering="created_at")
    def created_column(self, record: BackupRecord) -> str:
        day, _, clock = _when(record.created_at).partition(" ")
        return format_html('<span class="nowrap">{}</span> <span class="nowrap">{}</span>', day, clock)

    @admin.display(description="size (readable)")
    def size_human(self, record: BackupRecord) -> str:
        plain = f", {human_bytes(record.plain_size)} before compression" if record.plain_size else ""
        return f"{human_bytes(record.size)}{plain}"

    @admin.display(description="duration (readable)")
    def duration_human(self, record: BackupRecord) -> str:
        return human_duration(record.duration_seconds)

    @admin.display(description="progress (readable)")
    def progress_human(self, record: BackupRecord) -> str:
        return progress_of(record).line()

    @admin.action(description="Retry the selected failed backups")
    def retry_failed(self, request, queryset) -> None:
        ids = list(queryset.filter(status=BackupRecord.Status.FAILED).values_list("pk", flat=True))
        with transaction.atomic():
            backup_records_requeue_failed(record_ids=ids)
            backups_enqueue(BackupRecord.objects.filter(pk__in=ids))  # the whole chain, as the dispatcher sends
        messages.info(request, f"{len(ids)} backups queued again.")


    @admin.action(description="Restore objects (with what hung from them) from the selected backup")
    def restore_objects(self, request, queryset):
        """An intermediate form (model, primary keys, dry run), then an objects restore job on the workers."""
        from backups.admin.operator import operator_restore_objects_request

        records = list(queryset[:2])
        if len(records) != 1:
            messages.error(request, "Select exactly one backup to restore objects from.")
            return None
        record = records[0]
        form = RestoreObjectsForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            data = form.cleaned_data
            try:
                job = operator_restore_objects_request(record=record, model=data["model"], pks=data["pks"],
                                                       dry_run=data["dry_run"],
                                                       actor={"admin": request.user.get_username()})
            except (ApiServiceError, BackupError) as exc:
                form.add_error(None, getattr(exc, "detail", None) or str(exc))
            else:
                url = reverse(f"{self.admin_site.name}:backups_restorejob_change", args=[job.pk])
                messages.info(request, format_html('Objects restore queued as <a href="{}">restore job {}</a>{}.', url,
                                                   job.pk, " (dry run)" if data["dry_run"] else ""))
                return None
        context = {**self.admin_site.each_context(request), "title": "Restore objects", "record": record,
                   "form": form, "opts": self.model._meta}
        return TemplateResponse(request, "admin/backups/restore_objects.html", context)


class RestoreObjectsForm(forms.Form):
    """What the admin's objects restore asks for."""

    model = forms.CharField(max_length=200, help_text="app_label.Model, e.g. clinic.Patient.")
    pks = forms.CharField(label="primary keys", max_length=10000, help_text="Separated by commas or spaces.")
    dry_run = forms.BooleanField(required=False, initial=True, help_text="Only report what would be inserted.")

    def clean_pks(self) -> list[str]:
        keys = [k for k in self.cleaned_data["pks"].replace(",", " ").split() if k]
        if not keys:
            raise forms.ValidationError("Give at least one primary key.")
        return keys


@admin.register(SideCopy)
class SideCopyAdmin(admin.ModelAdmin):
    """Backups restored beside their tenant (`restore_tenant --into`), with their origin; dropped by housekeeping
    once they expire, or now with the action."""

    list_display = ("schema_name", "origin_schema", "record_column", "backup_taken_at", "created_at", "expires_at",
                    "state_column")
    list_filter = (("dropped_at", admin.EmptyFieldListFilter),)
    search_fields = ("schema_name", "origin_schema", "record_file_name", "tenant_uid")
    readonly_fields = [f.name for f in SideCopy._meta.fields]
    actions = ("drop_now",)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # the row is the listing of a schema: "drop now" drops both

    @admin.display(description="backup", ordering="record")
    def record_column(self, side: SideCopy) -> str:
        if side.record_id is None:
            return format_html('{} <span class="muted">(deleted)</span>', side.record_file_name or "-")
        url = reverse(f"{self.admin_site.name}:backups_backuprecord_change", args=[side.record_id])
        return format_html('<a href="{}">{}</a>', url, side.record_file_name or side.record_id)

    @admin.display(description="state", ordering="dropped_at")
    def state_column(self, side: SideCopy) -> str:
        return f"dropped {_when(side.dropped_at)}" if side.dropped_at else "present"

    @admin.action(description="Drop the selected side copies now")
    def drop_now(self, request, queryset) -> None:
        from backups.restore.side import side_copy_drop

        dropped, refused = 0, []
        for side in queryset.filter(dropped_at__isnull=True):
            try:
                dropped += side_copy_drop(side=side, actor={"admin": request.user.get_username()})
            except BackupError as exc:
                refused.append(f"{side.schema_name}: {exc}")
        messages.info(request, f"{dropped} side copies dropped.")
        for line in refused:
            messages.error(request, line)


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


@admin.register(InheritedUser)
class InheritedUserAdmin(admin.ModelAdmin):
    """Users a tenant found in its reused schema (an earlier tenant's), refused by the API; delete a row to
    re-admit that user."""

    list_display = ("username", "user_pk", "schema_name", "tenant_uid", "found_at")
    search_fields = ("schema_name", "username", "tenant_uid")
    readonly_fields = [f.name for f in InheritedUser._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows only the product writes (copies, data keys): listed for operators, never added, edited or deleted."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(BackupCopy)
class BackupCopyAdmin(ReadOnlyAdmin):
    """Copies in the second target (BACKUPS_COPY_STORAGE): read-only; failed ones are retried by the reaper."""

    list_display = ("file_name", "schema_name", "backend", "status", "attempts", "copied_at", "error")
    list_filter = ("status", "backend")
    search_fields = ("schema_name", "file_name", "tenant_uid")
    readonly_fields = [f.name for f in BackupCopy._meta.fields]


@admin.register(TenantKey)
class TenantKeyAdmin(ReadOnlyAdmin):
    """Tenant data keys (envelope encryption): which exist, which an erasure destroyed. Never edited here."""

    list_display = ("key_id", "schema_name", "tenant_uid", "created_at", "retired_at", "destroyed_at")
    search_fields = ("schema_name", "tenant_uid")
    exclude = ("wrapped",)
    readonly_fields = [f.name for f in TenantKey._meta.fields if f.name != "wrapped"]


@admin.register(RestoreJob)
class RestoreJobAdmin(admin.ModelAdmin):
    """Restores and verify drills (asked for through the API, or scheduled); read-only."""

    list_display = ("id", "schema_name", "mode", "status", "record", "created_at", "finished_at")
    list_filter = ("mode", "status")
    # an objects restore's report (what came back, what was left as a conflict) is read on the job's page
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
    """For a host project's tenant admin: schedule columns, an overdue filter, and bulk actions for operators.

    The public tenant (the operators' own domain, nothing to back up) is left out of the list and so out
    of every action. `backup_state` and `backups_link` are columns a host adds to its list_display.
    """

    list_filter = ("backup_schedule", OverdueFilter)
    readonly_fields = ("next_backup_at", "last_backup_at", "backup_overdue_since")
    actions = ("back_up_now", "disable_automatic_backups")

    def get_queryset(self, request):
        return super().get_queryset(request).exclude(schema_name=get_public_schema_name())

    @admin.display(description="schedule", ordering="backup_schedule")
    def backup_state(self, tenant) -> str:
        """The schedule, and whether its backups are on time."""
        label = tenant.get_backup_schedule_display()
        if tenant.backup_schedule == DISABLED:
            return format_html('<span class="muted">{}</span>', "not scheduled")
        if tenant.backup_overdue_since:
            return format_html('{} <span class="backups-status failed" title="since {}">overdue</span>', label,
                               _when(tenant.backup_overdue_since))
        return format_html('{} <span class="backups-status succeeded">{}</span>', label, "on time")

    @admin.display(description="history")
    def backups_link(self, tenant) -> str:
        url = reverse(f"{self.admin_site.name}:backups_backuprecord_changelist")
        return format_html('<a href="{}?tenant={}">backups</a>', url, tenant.pk)

    @admin.display(description="last backup", ordering="last_backup_at")
    def last_backup_column(self, tenant) -> str:
        return _when(tenant.last_backup_at)

    @admin.display(description="next backup", ordering="next_backup_at")
    def next_backup_column(self, tenant) -> str:
        return _when(tenant.next_backup_at)

    @admin.action(description="Back up the selected tenants now")
    def back_up_now(self, request, queryset) -> None:
        from backups.admin.operator import operator_backups_create

        records, busy = operator_backups_create(tenants=queryset, actor={"admin": request.user.get_username()})
        messages.info(request, f"{len(records)} backups queued on the priority queue."
                      + (f" Already running, skipped: {', '.join(busy)}." if busy else ""))

    @admin.action(description="Disable automatic backups of the selected tenants")
    def disable_automatic_backups(self, request, queryset) -> None:
        count = queryset.update(backup_schedule=DISABLED, next_backup_at=None, backup_overdue_since=None)
        messages.info(request, f"Automatic backups disabled for {count} tenants.")
