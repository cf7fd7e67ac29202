"""Output serializers shared by several views, and the safe text field every input uses."""

from __future__ import annotations

from dataclasses import asdict

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from backups.catalog.progress import progress_of
from backups.models import BackupEvent, BackupRecord, RestoreJob

NAMESPACE = "backups_api"


def no_surrogates(value: str) -> None:
    """Refuse text that is not valid Unicode (lone surrogates from `\\udXXX` escapes): it cannot be stored."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise serializers.ValidationError("Not valid UTF-8 text.") from None


class SafeCharField(serializers.CharField):
    """A CharField that also refuses lone surrogates (DRF already refuses NUL characters)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.validators.append(no_surrogates)


@extend_schema_field({"type": "string", "pattern": r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$",
                      "example": "03:30:00", "description": "A local wall-clock time, HH:MM[:SS], no UTC offset."})
class WallClockTimeField(serializers.TimeField):
    """A time of day on the tenant's clock (`HH:MM[:SS]`): a UTC offset makes no sense there and is refused."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("input_formats", ["%H:%M", "%H:%M:%S"])
        kwargs.setdefault("format", "%H:%M:%S")
        super().__init__(**kwargs)


def api_url(request, name: str, **kwargs) -> str:
    """An absolute URL of one of the API's own endpoints."""
    path = reverse(f"{NAMESPACE}:{name}", kwargs=kwargs)
    return request.build_absolute_uri(path) if request is not None else path


class ActorSerializer(serializers.Serializer):
    """Who did it: a snapshot of the user (users live in the tenant's schema, records in the public one)."""

    id = serializers.IntegerField(allow_null=True)
    email = serializers.CharField(allow_blank=True)
    name = serializers.CharField(allow_blank=True, help_text="The user's full name (get_full_name()).")


def actor_or_none(snapshot: dict | None) -> dict | None:
    """The snapshot as {id, email, name}, or None for the scheduler and other non-users.

    Snapshots written before 1.0 kept the demo's `nombre` field: it is read as the name."""
    if not snapshot or "id" not in snapshot:
        return None
    name = snapshot.get("name") or snapshot.get("nombre") or ""
    return {"id": snapshot.get("id"), "email": snapshot.get("email") or "", "name": name}


OPERATOR = {"operator": True, "name": "operator"}
OPERATOR_KEYS = ("admin", "command", "operator")


def public_actor(snapshot: dict | None) -> dict:
    """Who acted, as a tenant's admin may see it: their own users as recorded, the host's operators only as
    "operator" (never an operator's username: operators live in the public schema, not the tenant's), and the
    scheduler's and housekeeping's flags."""
    snapshot = snapshot or {}
    user = actor_or_none(snapshot)
    if user is not None:
        return user
    if any(key in snapshot for key in OPERATOR_KEYS):
        return dict(OPERATOR)
    return {key: value for key, value in snapshot.items() if value is True}


class RecordLinksSerializer(serializers.Serializer):
    """Where to look the record up and download it."""

    self = serializers.URLField()
    download = serializers.URLField()


class BackupRecordSerializer(serializers.ModelSerializer):
    """One backup, as the history lists it."""

    file_size = serializers.IntegerField(source="size", allow_null=True, read_only=True,
                                         help_text="Stored bytes (after compression); null until it succeeded.")
    file_size_mb = serializers.SerializerMethodField(help_text="file_size in MB (10^6 bytes), two decimals.")
    created_by = serializers.SerializerMethodField(help_text="Who asked; null for automatic backups.")
    links = serializers.SerializerMethodField()

    class Meta:
        model = BackupRecord
        fields = ("id", "file_name", "file_size", "file_size_mb", "backup_type", "created_by", "created_at",
                  "status", "format", "compression", "encryption", "sha256", "finished_at", "error", "links")
        read_only_fields = fields

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_file_size_mb(self, record: BackupRecord) -> float | None:
        return None if record.size is None else round(record.size / 1_000_000, 2)

    @extend_schema_field(ActorSerializer(allow_null=True))
    def get_created_by(self, record: BackupRecord) -> dict | None:
        return actor_or_none(record.requested_by)

    @extend_schema_field(RecordLinksSerializer)
    def get_links(self, record: BackupRecord) -> dict:
        request = self.context.get("request")
        return {"self": api_url(request, "history-detail", record_id=record.pk),
                "download": api_url(request, "history-download", record_id=record.pk)}


class ProgressSerializer(serializers.Serializer):
    """How far the backup is (estimated_total, percent and eta_seconds are null when nothing is known)."""

    stage = serializers.CharField(allow_blank=True)
    bytes_done = serializers.IntegerField(help_text="Raw dump bytes so far.")
    estimated_total = serializers.IntegerField(
        allow_null=True, help_text="Raw bytes expected: the last good backup's, else the schema's size.")
    percent = serializers.FloatField(allow_null=True, help_text="0-99 while it runs, 100 once succeeded.")
    eta_seconds = serializers.FloatField(allow_null=True, help_text="Seconds left at the rate so far.")


class BackupRecordDetailSerializer(BackupRecordSerializer):
    """One backup with its progress."""

    progress = serializers.SerializerMethodField()

    class Meta(BackupRecordSerializer.Meta):
        fields = BackupRecordSerializer.Meta.fields + ("stage", "bytes_done", "plain_size", "started_at",
                                                       "progress")
        read_only_fields = fields

    @extend_schema_field(ProgressSerializer)
    def get_progress(self, record: BackupRecord) -> dict:
        data = asdict(progress_of(record))
        data.pop("status")
        return data


class RestoreJobLinksSerializer(serializers.Serializer):
    """Where to follow the job."""

    self = serializers.URLField()


class RestoreJobSerializer(serializers.ModelSerializer):
    """A restore or verify drill and how it went."""

    record_id = serializers.IntegerField(allow_null=True, read_only=True)
    requested_by = serializers.SerializerMethodField()
    links = serializers.SerializerMethodField()

    class Meta:
        model = RestoreJob
        fields = ("id", "record_id", "schema_name", "mode", "options", "status", "report", "error", "requested_by",
                  "created_at", "started_at", "finished_at", "links")
        read_only_fields = fields

    @extend_schema_field(ActorSerializer(allow_null=True))
    def get_requested_by(self, job: RestoreJob) -> dict | None:
        return actor_or_none(job.requested_by)

    @extend_schema_field(RestoreJobLinksSerializer)
    def get_links(self, job: RestoreJob) -> dict:
        return {"self": api_url(self.context.get("request"), "restore-detail", job_id=job.pk)}


class BackupEventSerializer(serializers.ModelSerializer):
    """One line of the audit trail."""

    record_id = serializers.IntegerField(allow_null=True, read_only=True)
    file_name = serializers.SerializerMethodField()
    actor = serializers.SerializerMethodField()

    class Meta:
        model = BackupEvent
        fields = ("id", "action", "record_id", "file_name", "actor", "ip_address", "created_at", "details")
        read_only_fields = fields

    @extend_schema_field(serializers.CharField())
    def get_file_name(self, event: BackupEvent) -> str:
        if event.record is not None:
            return event.record.file_name
        return str((event.details or {}).get("file_name") or "")

    @extend_schema_field(serializers.DictField(
        help_text="{id, email, name} of a user of this tenant; {'operator': true, 'name': 'operator'} for the "
                  "host's operators (Django admin, commands); {'scheduler': true} and other flags; or {}."))
    def get_actor(self, event: BackupEvent) -> dict:
        return public_actor(event.actor)
