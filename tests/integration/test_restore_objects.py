"""restore_objects: a deleted patient comes back with its appointments, treatments and invoices, from sql, dump and
json backups, while later edits and later patients stay; conflicts are reported; bad input changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import Q
from django_tenants.utils import schema_context

from backups.backup.run import backup_run
from backups.catalog.records import backup_record_create
from backups.conf import local_root
from backups.core.errors import RestoreFailed, StoredObjectDamaged
from backups.models import BackupEvent, BackupRecord, RestoreJob
from backups.restore.objects import ObjectsRefused, restore_objects
from backups.restore.run import restore_replace
from clinic.models import Appointment, Invoice, Note, Patient, Treatment

from .helpers import DEMO_TABLES, table_fingerprints

SCHEMA = "clinica_sonrisa"

pytestmark = pytest.mark.usefixtures("forget_new_backups")


def _rows(table: str, column: str, values: list) -> list[tuple]:
    with connection.cursor() as cur:
        cur.execute(f"SELECT t::text FROM {SCHEMA}.{table} t WHERE {column} = ANY(%s) ORDER BY id", [values])
        return [r[0] for r in cur.fetchall()]


def _side_schemas() -> list[str]:
    with connection.cursor() as cur:
        cur.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tb_objects_%%' OR nspname LIKE %s",
                    [SCHEMA + "_old_%"])
        return [r[0] for r in cur.fetchall()]


class Deleted:
    """A patient with appointments, treatments and invoices, as it was, and then deleted (invoices first: they
    PROTECT their patient)."""

    def __init__(self) -> None:
        with schema_context(SCHEMA):
            patient = (Patient.objects.filter(treatments__isnull=False, invoices__isnull=False,
                                              clinical_notes__isnull=False, appointments__clinical_notes__isnull=False)
                       .order_by("pk").distinct().first())
            self.pk = patient.pk
            self.appointments = list(patient.appointments.values_list("pk", flat=True))
            self.treatments = list(Treatment.objects.filter(patient=patient).values_list("pk", flat=True))
            self.invoices = list(patient.invoices.values_list("pk", flat=True))
            self.numbers = list(patient.invoices.values_list("number", flat=True))
            self.notes = list(Note.objects.filter(Q(patient=patient) | Q(appointment__patient=patient))
                              .values_list("pk", flat=True))
        assert self.appointments and self.treatments and self.invoices and len(self.notes) >= 2
        self.rows = self.snapshot()

    def snapshot(self) -> dict[str, list]:
        return {"patient": _rows("clinic_patient", "id", [self.pk]),
                "appointments": _rows("clinic_appointment", "patient_id", [self.pk]),
                "treatments": _rows("clinic_treatment", "patient_id", [self.pk]),
                "invoices": _rows("clinic_invoice", "patient_id", [self.pk]),
                "notes": _rows("clinic_note", "id", self.notes)}

    def delete(self) -> None:
        with schema_context(SCHEMA):
            Invoice.objects.filter(patient_id=self.pk).delete()
            Patient.objects.filter(pk=self.pk).delete()
        assert self.snapshot() == {"patient": [], "appointments": [], "treatments": [], "invoices": [], "notes": []}


@pytest.fixture
def backup_and_guard(request):
    """A backup of the tenant in the format asked for; whatever the test leaves, the tenant is put back to it."""
    fmt = getattr(request, "param", "sql")
    before = table_fingerprints(SCHEMA, DEMO_TABLES)
    record = backup_run(record_id=backup_record_create(schema_name=SCHEMA, fmt=fmt).pk)
    assert record.status == BackupRecord.Status.SUCCEEDED, record.error
    yield record
    if table_fingerprints(SCHEMA, DEMO_TABLES) != before:
        restore_replace(schema=SCHEMA, record=record, safety_backup=False)
    assert table_fingerprints(SCHEMA, DEMO_TABLES) == before


@pytest.mark.parametrize("backup_and_guard", ["sql", "dump", "json"], indirect=True)
def test_deleted_patient_comes_back_with_what_hung_from_it(backup_and_guard):
    record = backup_and_guard
    gone = Deleted()
    gone.delete()
    with schema_context(SCHEMA):  # later work: an edit and a new patient with a visit
        other = Patient.objects.exclude(pk=gone.pk).order_by("pk").first()
        old_phone = other.telefono
        Patient.objects.filter(pk=other.pk).update(telefono="+34 600 000 000")
        later = Patient.objects.create(nombre="Nueva", apellidos="Después", email="n@example.com")
        Appointment.objects.create(patient=later, starts_at=datetime(2026, 1, 2, 9, tzinfo=UTC), motivo="Revisión")
    after_delete = table_fingerprints(SCHEMA, DEMO_TABLES)

    dry = restore_objects(schema=SCHEMA, record=record, model="clinic.Patient", pks=[gone.pk], dry_run=True)
    assert dry.ok and dry.dry_run
    assert dry.inserted == {"clinic.Patient": [gone.pk], "clinic.Appointment": sorted(gone.appointments),
                            "clinic.Treatment": sorted(gone.treatments), "clinic.Invoice": sorted(gone.invoices),
                            "clinic.Note": sorted(gone.notes)}  # generic relations: the patient's, its visits'

    assert dry.conflicts == {}
    assert table_fingerprints(SCHEMA, DEMO_TABLES) == after_delete  # a dry run changes nothing
    assert _side_schemas() == []

    report = restore_objects(schema=SCHEMA, record=record, model="clinic.patient", pks=[str(gone.pk)],
                             actor={"test": True})
    assert report.ok and not report.dry_run
    assert report.inserted == dry.inserted
    assert report.inserted_count == (1 + len(gone.appointments) + len(gone.treatments) + len(gone.invoices)
                                     + len(gone.notes))
    assert gone.snapshot() == gone.rows  # every column of every row as it was
    assert _side_schemas() == []
    with schema_context(SCHEMA):
        assert Patient.objects.get(pk=other.pk).telefono == "+34 600 000 000"  # later edits stay
        assert Patient.objects.filter(pk=later.pk).exists() and later.appointments.count() == 1
        newer = Patient.objects.create(nombre="Otra", apellidos="Más")  # sequences were never moved back
        assert newer.pk > later.pk
        newer.delete()
    event = BackupEvent.objects.filter(record=record, action=BackupEvent.Action.RESTORE_OBJECTS).latest("pk")
    assert event.details["ok"] and event.details["inserted"]["clinic.Patient"]["pks"] == [gone.pk]
    assert event.details["inserted_count"] == report.inserted_count

    again = restore_objects(schema=SCHEMA, record=record, model="clinic.Patient", pks=[gone.pk])
    assert again.inserted == {}
    assert again.conflicts == report.inserted  # everything is live now: left as it is, reported

    with schema_context(SCHEMA):
        Appointment.objects.filter(patient=later).delete()
        later.delete()
        Patient.objects.filter(pk=other.pk).update(telefono=old_phone)


def test_an_appointment_alone_comes_back_under_its_live_patient(backup_and_guard):
    record = backup_and_guard
    with schema_context(SCHEMA):
        visit = Appointment.objects.filter(treatments__isnull=False).order_by("pk").first()
        visit_pk = visit.pk
        treatments = sorted(visit.treatments.values_list("pk", flat=True))
        rows = _rows("clinic_treatment", "appointment_id", [visit_pk])
        visit.delete()  # its treatments keep their patient: SET_NULL
    report = restore_objects(schema=SCHEMA, record=record, model="clinic.Appointment", pks=[visit_pk])
    assert report.inserted == {"clinic.Appointment": [visit_pk]}
    assert report.conflicts == {"clinic.Treatment": treatments}  # live, with appointment NULL: not overwritten
    with schema_context(SCHEMA):
        assert Appointment.objects.filter(pk=visit_pk).exists()
        assert not Treatment.objects.filter(pk__in=treatments, appointment__isnull=False).exists()
        Treatment.objects.filter(pk__in=treatments).update(appointment_id=visit_pk)
    assert _rows("clinic_treatment", "appointment_id", [visit_pk]) == rows


def test_a_treatment_whose_appointment_is_gone_brings_the_appointment_back(backup_and_guard):
    record = backup_and_guard
    with schema_context(SCHEMA):
        treatment = Treatment.objects.filter(appointment__isnull=False).order_by("pk").first()
        visit = treatment.appointment_id
        siblings = list(Treatment.objects.filter(appointment_id=visit).exclude(pk=treatment.pk)
                        .values_list("pk", flat=True))
        Treatment.objects.filter(appointment_id=visit).delete()
        Appointment.objects.filter(pk=visit).delete()
    report = restore_objects(schema=SCHEMA, record=record, model="clinic.Treatment", pks=[treatment.pk])
    assert report.inserted == {"clinic.Treatment": [treatment.pk], "clinic.Appointment": [visit]}
    assert report.parents == {"clinic.Appointment": [visit]}
    if siblings:
        restore_objects(schema=SCHEMA, record=record, model="clinic.Treatment", pks=siblings)


def test_bad_input_is_refused_with_one_message_and_changes_nothing(backup_and_guard):
    record = backup_and_guard
    before = table_fingerprints(SCHEMA, DEMO_TABLES)
    cases = [
        ("clinic.Nothing", [1], "There is no model 'clinic.Nothing'"),
        ("patient", [1], "not a model name"),
        ("tenants.Clinica", [1], "not a model of the tenant's own apps"),
        ("backups.BackupRecord", [1], "not a model of the tenant's own apps"),
        ("clinic.Patient", ["abc"], "'abc' is not a primary key of clinic.Patient"),
        ("clinic.Patient", [], "at least one primary key"),
        ("clinic.Patient", [987654321], "holds no clinic.Patient with primary key 987654321"),
    ]
    for model, pks, message in cases:
        with pytest.raises(ObjectsRefused, match=message):
            restore_objects(schema=SCHEMA, record=record, model=model, pks=pks)
    other = backup_run(record_id=backup_record_create(schema_name="clinica_norte", fmt="sql").pk)
    with pytest.raises(RestoreFailed, match="was taken from schema 'clinica_norte'"):
        restore_objects(schema=SCHEMA, record=other, model="clinic.Patient", pks=[1])
    assert table_fingerprints(SCHEMA, DEMO_TABLES) == before
    assert _side_schemas() == []


def test_a_damaged_backup_is_refused_and_marked(backup_and_guard):
    record = backup_and_guard
    path = Path(local_root()) / record.storage_key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StoredObjectDamaged):
        restore_objects(schema=SCHEMA, record=record, model="clinic.Patient", pks=[1])
    record.refresh_from_db()
    assert record.damaged_at is not None
    with pytest.raises(RestoreFailed, match="marked damaged"):
        restore_objects(schema=SCHEMA, record=record, model="clinic.Patient", pks=[1])


def test_a_unique_clash_with_a_later_live_row_refuses_everything(backup_and_guard):
    record = backup_and_guard
    gone = Deleted()
    gone.delete()
    with schema_context(SCHEMA):
        taker = Patient.objects.order_by("pk").first()
        clash = Invoice.objects.create(patient=taker, number=gone.numbers[0],
                                       issued_at=datetime(2026, 1, 1, tzinfo=UTC), total=Decimal("1.00"))
    after = table_fingerprints(SCHEMA, DEMO_TABLES)
    with pytest.raises(RestoreFailed, match=rf"same number as the live clinic.Invoice {clash.pk}"):
        restore_objects(schema=SCHEMA, record=record, model="clinic.Patient", pks=[gone.pk])
    assert table_fingerprints(SCHEMA, DEMO_TABLES) == after
    with schema_context(SCHEMA):
        clash.delete()
    restore_objects(schema=SCHEMA, record=record, model="clinic.Patient", pks=[gone.pk])
    assert gone.snapshot() == gone.rows


def test_the_command_prints_the_dry_run_and_the_restore(backup_and_guard, capsys):
    record = backup_and_guard
    gone = Deleted()
    gone.delete()
    call_command("restore_objects", SCHEMA, str(record.pk), "clinic.Patient", str(gone.pk), "--dry-run")
    out = capsys.readouterr().out
    assert "Dry run: nothing was changed." in out
    assert f"clinic.Patient: 1 to insert ({gone.pk})" in out
    assert gone.snapshot()["patient"] == []
    call_command("restore_objects", SCHEMA, str(record.pk), "clinic.Patient", str(gone.pk))
    out = capsys.readouterr().out
    assert f"clinic.Patient: 1 inserted ({gone.pk})" in out
    assert gone.snapshot() == gone.rows
    with pytest.raises(CommandError, match="There is no model 'clinic.Nope'"):
        call_command("restore_objects", SCHEMA, str(record.pk), "clinic.Nope", "1")
    with pytest.raises(CommandError, match="No backup record 99999999"):
        call_command("restore_objects", SCHEMA, "99999999", "clinic.Patient", "1")


def test_the_admin_action_asks_then_queues_an_objects_job(ops_client):
    record = backup_run(record_id=backup_record_create(schema_name=SCHEMA, fmt="sql").pk)
    url = "/admin/backups/backuprecord/"
    form = ops_client.post(url, {"action": "restore_objects", "_selected_action": [record.pk]})
    assert form.status_code == 200 and "primary keys" in form.content.decode()
    bad = ops_client.post(url, {"action": "restore_objects", "_selected_action": [record.pk], "apply": "1",
                                "model": "tenants.Clinica", "pks": "1"})
    assert bad.status_code == 200 and "not a model of the tenant" in bad.content.decode()
    assert not RestoreJob.objects.filter(record=record).exists()
    done = ops_client.post(url, {"action": "restore_objects", "_selected_action": [record.pk], "apply": "1",
                                 "model": "clinic.Patient", "pks": "3, 4", "dry_run": "on"})
    assert done.status_code == 302
    job = RestoreJob.objects.get(record=record)
    assert job.mode == RestoreJob.Mode.OBJECTS and job.requested_by == {"admin": "ops-admin-test"}
    assert job.options == {"model": "clinic.Patient", "pks": [3, 4], "dry_run": True}
    RestoreJob.objects.filter(pk=job.pk).update(status=RestoreJob.Status.FAILED)  # no worker here: never sent on
