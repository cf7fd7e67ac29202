"""Backup state, kept in the public schema so a restore never rewrites it."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class BackupStatus(models.TextChoices):
    """Where a backup stands (BackupRecord.Status)."""

    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class BackupStage(models.TextChoices):
    """Where the record is in the pipeline, shown to users (API, admin) and read by the reaper and deletion.

    Written only by backups.catalog.records; the database refuses any other value.
    """

    NEW = "", "Not started"
    DUMPING = "dumping", "Dumping"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    RETRYING = "retrying", "Waiting to retry"
    REQUEUED = "requeued", "Sent again"  # by the reaper; a second loss fails it
    DELETING = "deleting", "Being deleted"  # crash-safe deletion: the reaper finishes what a crash left
    MISSING = "missing", "Object missing from storage"  # found by reconcile
    IMPORTED = "imported", "Imported from a stored manifest"  # rebuilt by reconcile


class BackupRecordQuerySet(models.QuerySet):
    """Reusable filters of the catalog."""

    def active(self) -> "BackupRecordQuerySet":
        """Queued or running: a worker may still write them (BackupRecord.ACTIVE_STATUSES)."""
        return self.filter(status__in=BackupRecord.ACTIVE_STATUSES)

    def finished(self) -> "BackupRecordQuerySet":
        """Succeeded or failed: no worker writes them again (BackupRecord.FINISHED_STATUSES)."""
        return self.filter(status__in=BackupRecord.FINISHED_STATUSES)

    def restorable(self) -> "BackupRecordQuerySet":
        """Succeeded, not found damaged, and with a digest to check the stored bytes against: the only
        backups a restore, a drill or retention's "newest good backup" may count on."""
        return self.filter(status=BackupRecord.Status.SUCCEEDED, damaged_at__isnull=True).exclude(sha256="")


class BackupRecord(models.Model):
    """One backup of one tenant's schema: where it is, what it holds, how it went."""

    Status = BackupStatus
    Stage = BackupStage
    # the only definitions of "active" and "finished" (the querysets' active()/finished() and is_active/is_finished)
    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)
    FINISHED_STATUSES = (Status.SUCCEEDED, Status.FAILED)

    class Type(models.TextChoices):
        MANUAL = "manual", "Manual"
        AUTOMATIC = "automatic", "Automatic"
        PRE_RESTORE = "pre_restore", "Safety copy before a restore"

    class Format(models.TextChoices):
        SQL = "sql", "Plain SQL (psql)"
        DUMP = "dump", "Custom archive (pg_restore)"
        JSON = "json", "Django JSON Lines (portable)"

    class Compression(models.TextChoices):
        ZSTD = "zstd", "zstd"
        GZIP = "gzip", "gzip"
        NONE = "none", "none"

    tenant = models.ForeignKey(
        settings.TENANT_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="backup_records",
        verbose_name="tenant", help_text="The tenant backed up; kept empty if the tenant is deleted later.",
    )
    tenant_uid = models.UUIDField(
        "tenant identity", help_text="The never-reused identity of the tenant backed up; every lookup filters "
                                     "by it, so a later tenant with the same schema name sees nothing of this one.",
    )
    tenant_deleted_at = models.DateTimeField(
        "tenant deleted at", null=True, blank=True,
        help_text="When the tenant was deleted; its backups are kept for operators until "
                  "BACKUPS_DELETED_TENANT_KEEP_DAYS have passed.",
    )
    schema_name = models.CharField(
        "schema name", max_length=63, help_text="The schema the backup was taken from (survives renames).",
    )
    file_name = models.CharField("file name", max_length=255, help_text="Name following the product's convention.")
    storage_backend = models.CharField("storage backend", max_length=20, help_text="local, s3 or supabase.")
    storage_key = models.CharField("storage key", max_length=1024, help_text="Key of the object in its backend.")
    format = models.CharField("format", max_length=8, choices=Format.choices, default=Format.SQL)
    compression = models.CharField("compression", max_length=8, choices=Compression.choices, default=Compression.ZSTD)
    encryption = models.CharField("encryption", max_length=16, blank=True, default="", help_text="'age' or empty.")
    size = models.BigIntegerField("size", null=True, blank=True, help_text="Stored bytes (after compression).")
    plain_size = models.BigIntegerField("plain size", null=True, blank=True, help_text="Bytes of the raw dump.")
    sha256 = models.CharField("SHA-256", max_length=64, blank=True, default="", help_text="Of the stored bytes.")
    plain_sha256 = models.CharField(
        "plain SHA-256", max_length=64, blank=True, default="", help_text="Of the raw dump."
    )
    status = models.CharField("status", max_length=10, choices=Status.choices, default=Status.QUEUED)
    backup_type = models.CharField("type", max_length=12, choices=Type.choices, default=Type.MANUAL)
    slot = models.DateTimeField(
        "schedule slot", null=True, blank=True, help_text="The scheduled time an automatic backup serves.",
    )
    requested_by = models.JSONField(
        "requested by", default=dict, blank=True, help_text="Snapshot {id, email, name} of who asked.",
    )
    created_at = models.DateTimeField("created at", auto_now_add=True)
    enqueued_at = models.DateTimeField(
        "enqueued at", null=True, blank=True, help_text="When its task message was last sent to the broker.",
    )
    started_at = models.DateTimeField("started at", null=True, blank=True)
    finished_at = models.DateTimeField("finished at", null=True, blank=True)
    error = models.TextField("error", blank=True, default="")
    task_id = models.CharField("Celery task id", max_length=255, blank=True, default="")
    stage = models.CharField("stage", max_length=32, blank=True, choices=Stage.choices, default=Stage.NEW,
                             help_text="Current pipeline stage.")
    damaged_at = models.DateTimeField(
        "damaged at", null=True, blank=True,
        help_text="When the stored object failed its size or SHA-256 check; a damaged backup is never offered "
                  "for restore, drilled, or counted as a good backup by retention.",
    )
    locked_until = models.DateTimeField(
        "locked until", null=True, blank=True,
        help_text="S3 Object Lock retain-until date of the object and its manifest (AWS_S3_OBJECT_LOCK_MODE): "
                  "nobody, retention included, can delete them before; extended while retention keeps them.",
    )
    bytes_done = models.BigIntegerField("bytes done", default=0, help_text="Raw dump bytes processed so far.")
    attempts = models.PositiveSmallIntegerField("attempts", default=0)
    manifest = models.JSONField(
        "manifest", default=dict, blank=True,
        help_text="PostgreSQL/pg_dump versions, applied migrations, row counts per table, extensions.",
    )

    objects = BackupRecordQuerySet.as_manager()

    class Meta:
        verbose_name = "backup"
        verbose_name_plural = "backups"
        ordering = ("-created_at", "-id")
        constraints = [
            models.UniqueConstraint(
                fields=("tenant", "slot"), condition=Q(slot__isnull=False), name="backups_record_unique_slot",
            ),
            models.UniqueConstraint(fields=("storage_backend", "storage_key"), name="backups_record_unique_key"),
            models.CheckConstraint(condition=Q(status__in=BackupStatus.values), name="backups_record_status_valid"),
            models.CheckConstraint(condition=Q(stage__in=BackupStage.values), name="backups_record_stage_valid"),
        ]
        indexes = [
            models.Index(fields=("schema_name", "-created_at"), name="backups_record_schema_idx"),
            models.Index(fields=("tenant_uid", "-created_at"), name="backups_record_uid_idx"),
            models.Index(fields=("status", "created_at"), name="backups_record_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.file_name} [{self.status}]"

    @property
    def is_active(self) -> bool:
        """Queued or running (see BackupRecordQuerySet.active)."""
        return self.status in self.ACTIVE_STATUSES

    @property
    def is_finished(self) -> bool:
        """Succeeded or failed (see BackupRecordQuerySet.finished)."""
        return self.status in self.FINISHED_STATUSES

    @property
    def duration_seconds(self) -> float | None:
        """Wall time of the last run, when it finished."""
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class BackupEvent(models.Model):
    """Audit trail: who did what to which backup, from where, when."""

    class Action(models.TextChoices):
        CREATE = "create", "Create"
        SUCCEED = "succeed", "Succeeded"
        FAIL = "fail", "Failed"
        DOWNLOAD = "download", "Download"
        LINK = "link", "Time-limited link"
        DELETE = "delete", "Delete"
        RESTORE = "restore", "Restore"
        VERIFY = "verify", "Verify drill"
        ERASE = "erase", "Erasure (every backup and the data key)"
        SCHEDULE_CHANGE = "schedule_change", "Schedule change"
        RETENTION = "retention", "Retention delete"
        RESTORE_OBJECTS = "restore_objects", "Objects restored"
        SIDE_COPY = "side_copy", "Side copy"
        CLONE = "clone", "Clone"

    tenant = models.ForeignKey(
        settings.TENANT_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="backup_events",
        verbose_name="tenant",
    )
    tenant_uid = models.UUIDField("tenant identity", null=True, blank=True,
                                  help_text="The never-reused identity of the tenant the event belongs to.")
    schema_name = models.CharField("schema name", max_length=63)
    record = models.ForeignKey(
        BackupRecord, null=True, blank=True, on_delete=models.SET_NULL, related_name="events", verbose_name="backup",
    )
    action = models.CharField("action", max_length=20, choices=Action.choices)
    actor = models.JSONField("actor", default=dict, blank=True, help_text="Snapshot {id, email, name}, or empty.")
    ip_address = models.GenericIPAddressField("IP address", null=True, blank=True)
    details = models.JSONField("details", default=dict, blank=True)
    created_at = models.DateTimeField("created at", auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = "backup event"
        verbose_name_plural = "backup events"
        ordering = ("-created_at", "-id")
        indexes = [models.Index(fields=("schema_name", "-created_at"), name="backups_event_schema_idx"),
                   models.Index(fields=("tenant_uid", "-created_at"), name="backups_event_uid_idx")]

    def __str__(self) -> str:
        return f"{self.action} {self.schema_name} {self.created_at:%Y-%m-%d %H:%M:%S}"


class RestoreStatus(models.TextChoices):
    """Where a restore job stands (RestoreJob.Status): its own enum, though the values match BackupStatus."""

    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class RestoreJobQuerySet(models.QuerySet):
    """Reusable filters of restore jobs, by RestoreJob's own statuses."""

    def active(self) -> "RestoreJobQuerySet":
        """Queued or running (RestoreJob.ACTIVE_STATUSES)."""
        return self.filter(status__in=RestoreJob.ACTIVE_STATUSES)

    def finished(self) -> "RestoreJobQuerySet":
        """Succeeded or failed (RestoreJob.FINISHED_STATUSES)."""
        return self.filter(status__in=RestoreJob.FINISHED_STATUSES)


class RestoreJob(models.Model):
    """One restore (replace) or verify drill, asked for through the API or scheduled, run by `restore_backup`."""

    class Mode(models.TextChoices):
        REPLACE = "replace", "Replace the live schema"
        VERIFY = "verify", "Verify drill in a scratch database"
        OBJECTS = "objects", "Restore objects with what hung from them"

    Status = RestoreStatus

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)
    FINISHED_STATUSES = (Status.SUCCEEDED, Status.FAILED)

    tenant = models.ForeignKey(
        settings.TENANT_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="restore_jobs",
        verbose_name="tenant", help_text="The tenant restored; kept empty if the tenant is deleted later.",
    )
    tenant_uid = models.UUIDField(
        "tenant identity", help_text="The never-reused identity of the tenant restored; the job runs only "
                                     "while a tenant of this identity owns the schema.",
    )
    schema_name = models.CharField(
        "schema name", max_length=63, help_text="The schema the job restores into (or verifies for).",
    )
    record = models.ForeignKey(
        BackupRecord, null=True, blank=True, on_delete=models.SET_NULL, related_name="restore_jobs",
        verbose_name="backup", help_text="The backup restored; kept empty if it is deleted later.",
    )
    mode = models.CharField(
        "mode", max_length=8, choices=Mode.choices, default=Mode.REPLACE,
        help_text="replace: swap the live schema for the backup; verify: restore into a scratch database; "
                  "objects: put back named objects and what hung from them, missing live.",
    )
    options = models.JSONField(
        "options", default=dict, blank=True,
        help_text="What an objects restore was asked for: {model, pks, dry_run}; empty for the other modes.",
    )
    status = models.CharField(
        "status", max_length=10, choices=Status.choices, default=Status.QUEUED, help_text="Where the job stands.",
    )
    report = models.JSONField(
        "report", default=dict, blank=True,
        help_text="What the restore found: row counts (manifest, restored), safety backup id, message.",
    )
    error = models.TextField("error", blank=True, default="", help_text="Why the job failed, if it did.")
    requested_by = models.JSONField(
        "requested by", default=dict, blank=True, help_text="Snapshot {id, email, name} of who asked.",
    )
    task_id = models.CharField(
        "Celery task id", max_length=255, blank=True, default="", help_text="The task that ran the job last.",
    )
    created_at = models.DateTimeField("created at", auto_now_add=True, help_text="When the job was asked for.")
    started_at = models.DateTimeField("started at", null=True, blank=True, help_text="When a worker took it.")
    finished_at = models.DateTimeField("finished at", null=True, blank=True, help_text="When it succeeded or failed.")

    objects = RestoreJobQuerySet.as_manager()

    class Meta:
        verbose_name = "restore job"
        verbose_name_plural = "restore jobs"
        ordering = ("-created_at", "-id")
        constraints = [
            models.CheckConstraint(condition=Q(status__in=RestoreStatus.values), name="backups_restore_status_valid"),
        ]
        indexes = [
            models.Index(fields=("schema_name", "-created_at"), name="backups_restore_schema_idx"),
            models.Index(fields=("tenant_uid", "-created_at"), name="backups_restore_uid_idx"),
            models.Index(fields=("status", "created_at"), name="backups_restore_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.mode} {self.schema_name} [{self.status}]"

    @property
    def is_active(self) -> bool:
        """Queued or running (see RestoreJobQuerySet.active)."""
        return self.status in self.ACTIVE_STATUSES

    @property
    def is_finished(self) -> bool:
        """Succeeded or failed (see RestoreJobQuerySet.finished)."""
        return self.status in self.FINISHED_STATUSES


class InheritedUser(models.Model):
    """A user a tenant's schema already held when the tenant was created: an earlier tenant's, refused.

    With auto_drop_schema = False a deleted tenant's schema keeps its users and API tokens; a later tenant given
    the same schema name finds them. They belong to the earlier identity, so the API refuses them (passwords,
    DRF tokens, JWTs). Deleting a row re-admits that user on purpose.
    """

    tenant_uid = models.UUIDField(
        "tenant identity", help_text="The identity of the tenant whose schema held the user when it was created.",
    )
    schema_name = models.CharField("schema name", max_length=63, help_text="The schema the user was found in.")
    user_pk = models.CharField(
        "user id", max_length=64, help_text="The primary key of the user in that schema (as text).",
    )
    username = models.CharField(
        "username", max_length=255, blank=True, default="", help_text="The user's name when found, for operators.",
    )
    found_at = models.DateTimeField("found at", auto_now_add=True, help_text="When the tenant was created.")

    class Meta:
        verbose_name = "inherited user"
        verbose_name_plural = "inherited users"
        ordering = ("-found_at", "-id")
        constraints = [models.UniqueConstraint(fields=("tenant_uid", "user_pk"), name="backups_inherited_user_unique")]

    def __str__(self) -> str:
        return f"{self.username or self.user_pk} in {self.schema_name}"


class SideCopyQuerySet(models.QuerySet):
    """Reusable filters of side copies."""

    def present(self) -> "SideCopyQuerySet":
        """Side copies whose schema has not been dropped."""
        return self.filter(dropped_at__isnull=True)

    def expired(self, now) -> "SideCopyQuerySet":
        """Present side copies whose time is up (housekeeping drops them)."""
        return self.present().filter(expires_at__lte=now)


class SideCopy(models.Model):
    """A backup restored beside its tenant into a schema of its own (not a tenant, never routed), for operators
    to query and compare; dropped by housekeeping once `expires_at` passed."""

    schema_name = models.CharField(
        "schema name", max_length=63, help_text="The side copy's own schema, in the same database as its tenant.",
    )
    origin_schema = models.CharField(
        "origin schema", max_length=63, help_text="The tenant schema the backup was taken from.",
    )
    tenant_uid = models.UUIDField(
        "tenant identity", help_text="The identity of the tenant whose backup this is.",
    )
    record = models.ForeignKey(
        BackupRecord, null=True, blank=True, on_delete=models.SET_NULL, related_name="side_copies",
        verbose_name="backup", help_text="The backup restored; kept empty if it is deleted later.",
    )
    record_file_name = models.CharField(
        "backup file", max_length=255, blank=True, default="", help_text="The backup's file name, kept if it goes.",
    )
    backup_taken_at = models.DateTimeField(
        "backup taken at", null=True, blank=True, help_text="When the backup restored here was made.",
    )
    requested_by = models.JSONField(
        "requested by", default=dict, blank=True, help_text="Snapshot of who asked (an operator, a command).",
    )
    created_at = models.DateTimeField("created at", auto_now_add=True)
    expires_at = models.DateTimeField(
        "expires at", help_text="Housekeeping drops the schema after this (BACKUPS_SIDE_COPY_KEEP_DAYS).",
    )
    dropped_at = models.DateTimeField(
        "dropped at", null=True, blank=True, help_text="When the schema was dropped (by housekeeping or by hand).",
    )

    objects = SideCopyQuerySet.as_manager()

    class Meta:
        verbose_name = "side copy"
        verbose_name_plural = "side copies"
        ordering = ("-created_at", "-id")
        constraints = [
            models.UniqueConstraint(fields=("schema_name",), condition=Q(dropped_at__isnull=True),
                                    name="backups_sidecopy_unique_present"),
        ]
        indexes = [models.Index(fields=("expires_at",), name="backups_sidecopy_expires_idx")]

    def __str__(self) -> str:
        return f"{self.schema_name} (from {self.origin_schema})"


class BackupCopyStatus(models.TextChoices):
    """Where a backup's copy in the second target stands."""

    PENDING = "pending", "Pending"
    COPIED = "copied", "Copied"
    FAILED = "failed", "Failed"


class BackupCopy(models.Model):
    """A backup's copy in the second target (BACKUPS_COPY_STORAGE): same key, same bytes, its own retention.

    It keeps what a restore needs to check the copied bytes (size, SHA-256) so it outlives its record when the
    copy target keeps backups longer than the primary (BACKUPS_COPY_KEEP_*)."""

    Status = BackupCopyStatus

    record = models.ForeignKey(
        BackupRecord, null=True, blank=True, on_delete=models.SET_NULL, related_name="copies",
        verbose_name="backup", help_text="The primary backup; empty once the primary's retention deleted it.")
    tenant_uid = models.UUIDField("tenant identity", db_index=True, help_text="The identity the backup belongs to.")
    schema_name = models.CharField("schema name", max_length=63, help_text="The schema the backup was taken from.")
    file_name = models.CharField("file name", max_length=255, help_text="The backup's file name.")
    backend = models.CharField("copy backend", max_length=20, help_text="local, s3 or supabase.")
    storage_key = models.CharField("storage key", max_length=1024, help_text="Key of the copy in its backend.")
    backup_type = models.CharField("type", max_length=12, help_text="The backup's type (retention needs it).")
    backup_created_at = models.DateTimeField("backup created at", help_text="When the backup was made.")
    size = models.BigIntegerField("size", null=True, blank=True, help_text="Stored bytes, checked when copied.")
    sha256 = models.CharField("SHA-256", max_length=64, blank=True, default="", help_text="Of the stored bytes.")
    status = models.CharField("status", max_length=10, choices=BackupCopyStatus.choices,
                              default=BackupCopyStatus.PENDING, help_text="pending, copied or failed.")
    attempts = models.PositiveSmallIntegerField("attempts", default=0, help_text="Copies tried so far.")
    error = models.TextField("error", blank=True, default="", help_text="Why the last copy failed.")
    copied_at = models.DateTimeField("copied at", null=True, blank=True, help_text="When the copy was confirmed.")
    locked_until = models.DateTimeField("locked until", null=True, blank=True,
                                        help_text="S3 Object Lock retain-until date in the copy target, if any.")
    created_at = models.DateTimeField("created at", auto_now_add=True, help_text="When the copy was asked for.")

    class Meta:
        verbose_name = "backup copy"
        verbose_name_plural = "backup copies"
        constraints = [
            models.UniqueConstraint(fields=("backend", "storage_key"), name="backups_copy_unique_key"),
            models.CheckConstraint(condition=Q(status__in=BackupCopyStatus.values), name="backups_copy_status_valid"),
        ]
        indexes = [models.Index(fields=("status", "created_at"), name="backups_copy_status_idx")]

    def __str__(self) -> str:
        return f"copy of {self.file_name} in {self.backend} [{self.status}]"


class TenantKey(models.Model):
    """A tenant identity's data key (envelope encryption): an age X25519 identity of its own that its backups are
    encrypted to, kept only wrapped for the deployment's age recipients, here and beside the objects.

    Destroying it (erasure) leaves whatever could not be deleted (a locked object, an unreachable copy)
    unreadable: the deployment's own keys were never recipients of the backups."""

    key_id = models.UUIDField("key id", primary_key=True, default=uuid.uuid4, editable=False,
                              help_text="Named in each backup's manifest and in the wrapped key's object name.")
    tenant_uid = models.UUIDField("tenant identity", db_index=True, help_text="The identity whose backups it locks.")
    schema_name = models.CharField("schema name", max_length=63, help_text="The schema when the key was made.")
    recipient = models.CharField("recipient", max_length=100, help_text="The key's public half (age1...).")
    wrapped = models.TextField("wrapped key", blank=True, default="",
                               help_text="The secret half, age-encrypted to BACKUPS_AGE_RECIPIENTS (base64); empty "
                                         "once destroyed.")
    wrapped_for = models.CharField("wrapped for", max_length=500, blank=True, default="",
                                   help_text="Fingerprints of the recipients it is wrapped for (comma-separated).")
    created_at = models.DateTimeField("created at", auto_now_add=True, help_text="When the key was made.")
    retired_at = models.DateTimeField("retired at", null=True, blank=True,
                                      help_text="When new backups stopped using it (BACKUPS_AGE_RECIPIENTS changed and "
                                                "it could not be wrapped again); it still opens the older ones.")
    destroyed_at = models.DateTimeField("destroyed at", null=True, blank=True,
                                        help_text="When an erasure destroyed it; its backups are unreadable since.")

    class Meta:
        verbose_name = "tenant data key"
        verbose_name_plural = "tenant data keys"
        constraints = [models.UniqueConstraint(fields=("tenant_uid",),
                                               condition=Q(destroyed_at__isnull=True, retired_at__isnull=True),
                                               name="backups_tenantkey_one_live")]

    def __str__(self) -> str:
        return f"data key {self.key_id} of {self.schema_name}{' (destroyed)' if self.destroyed_at else ''}"
