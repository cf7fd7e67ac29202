"""POST history/<id>/restore-objects/: a job like restore (202 + job), run by the worker; bad input is refused at
once with one message, and nothing is changed."""

from __future__ import annotations

import pytest
from django.db.models import Q
from django_tenants.utils import schema_context

from backups.catalog.records import backup_record_create
from backups.models import BackupEvent, BackupRecord
from clinic.models import Invoice, Note, Patient, Treatment

from .conftest import api_client, wait_for_job, wait_for_status

SCHEMA = "clinica_norte"


@pytest.mark.worker
def test_a_deleted_patient_comes_back_through_the_api(creds, api_worker, cleanup):
    client = api_client(SCHEMA, f"Bearer {creds[SCHEMA].admin_jwt}")
    created = client.post("/api/backups/create/", {"format": "json"}, format="json")
    assert created.status_code == 202, created.content
    record = wait_for_status(created.json()["id"])
    assert record.status == BackupRecord.Status.SUCCEEDED, record.error
    with schema_context(SCHEMA):
        patient = Patient.objects.filter(invoices__isnull=False, treatments__isnull=False).order_by("pk").first()
        pk = patient.pk
        expected = {"clinic.Patient": 1, "clinic.Appointment": patient.appointments.count(),
                    "clinic.Treatment": Treatment.objects.filter(patient=patient).count(),
                    "clinic.Invoice": patient.invoices.count(),
                    "clinic.Note": Note.objects.filter(Q(patient=patient) | Q(appointment__patient=patient)).count()}
        expected = {label: n for label, n in expected.items() if n}
        Invoice.objects.filter(patient=patient).delete()
        patient.delete()
    url = f"/api/backups/history/{record.pk}/restore-objects/"
    try:
        dry = client.post(url, {"model": "clinic.Patient", "pks": [pk], "dry_run": True}, format="json")
        assert dry.status_code == 202, dry.content
        assert dry.json()["mode"] == "objects" and dry.json()["options"] == {
            "model": "clinic.Patient", "pks": [pk], "dry_run": True}
        assert dry["Location"] == dry.json()["links"]["self"]
        job = wait_for_job(dry.json()["id"])
        assert job.status == "succeeded", job.error
        assert {label: v["count"] for label, v in job.report["inserted"].items()} == expected
        assert job.report["dry_run"] is True
        with schema_context(SCHEMA):
            assert not Patient.objects.filter(pk=pk).exists()

        response = client.post(url, {"model": "clinic.Patient", "pks": [str(pk)]}, format="json")
        assert response.status_code == 202, response.content
        job = wait_for_job(response.json()["id"])
        assert job.status == "succeeded", job.error
        followed = client.get(f"/api/backups/restores/{job.pk}/").json()
        assert followed["report"]["inserted"]["clinic.Patient"] == {"count": 1, "pks": [pk]}
        assert followed["report"]["conflict_count"] == 0
        with schema_context(SCHEMA):
            assert Patient.objects.filter(pk=pk).exists()
            assert Invoice.objects.filter(patient_id=pk).count() == expected["clinic.Invoice"]

        missing = client.post(url, {"model": "clinic.Patient", "pks": [987654321]}, format="json")
        assert missing.status_code == 202
        failed = wait_for_job(missing.json()["id"])
        assert failed.status == "failed" and "holds no clinic.Patient with primary key 987654321" in failed.error
        events = BackupEvent.objects.filter(record=record, action=BackupEvent.Action.RESTORE_OBJECTS)
        assert events.filter(details__via="api").count() == 3
        assert events.filter(details__ok=True, details__dry_run=False).exists()
    finally:
        with schema_context(SCHEMA):
            assert Patient.objects.filter(pk=pk).exists(), "the patient was not put back"


def _failed(schema: str) -> BackupRecord:
    record = backup_record_create(schema_name=schema)
    BackupRecord.objects.filter(pk=record.pk).update(status=BackupRecord.Status.FAILED)
    return record


@pytest.mark.parametrize("body, field, message", [
    ({"model": "clinic.Nope", "pks": [1]}, "model", "There is no model 'clinic.Nope'"),
    ({"model": "tenants.Clinica", "pks": [1]}, "model", "not a model of the tenant's own apps"),
    ({"model": "backups.BackupRecord", "pks": [1]}, "model", "not a model of the tenant's own apps"),
    ({"model": "clinic.Patient", "pks": ["x"]}, "pks", "'x' is not a primary key of clinic.Patient"),
    ({"model": "clinic.Patient", "pks": []}, "pks", None),
    ({"model": "clinic.Patient"}, "pks", None),
    ({"pks": [1]}, "model", None),
])
def test_bad_input_is_400_naming_the_field(admin, cleanup, body, field, message):
    record = _failed("clinica_demo")  # the input is checked before the backup is
    response = admin.post(f"/api/backups/history/{record.pk}/restore-objects/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    if message:
        assert message in str(response.json()[field])


def test_another_tenants_backup_is_404(admin, cleanup):
    other = _failed(SCHEMA)
    response = admin.post(f"/api/backups/history/{other.pk}/restore-objects/",
                          {"model": "clinic.Patient", "pks": [1]}, format="json")
    assert response.status_code == 404
