"""Side copies (`restore_tenant --into`) and clones (`clone_tenant`) hold the backup's content; the live tenant is
untouched; side copies are listed with their origin and dropped by housekeeping; clones are new identities with
their own domain, no backups, a disabled schedule, and the anonymizer ran."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone
from django_tenants.utils import get_tenant_domain_model, get_tenant_model, schema_context

from backups.backup.run import backup_run
from backups.catalog.records import backup_record_create
from backups.catalog.selectors import schema_exists
from backups.core.errors import RestoreFailed
from backups.models import BackupEvent, BackupRecord, SideCopy
from backups.restore.clone import clone_tenant
from backups.restore.side import restore_side_copy, side_copies_expire
from backups.tasks import expire_side_copies
from clinic.models import Patient

from .helpers import DEMO_TABLES, table_fingerprints

SCHEMA = "clinica_demo"
CLINICAL = ["clinic_appointment", "clinic_treatment", "clinic_invoice", "accounts_user"]

pytestmark = pytest.mark.usefixtures("forget_new_backups")


def _drop(schema: str) -> None:
    with connection.cursor() as cur:
        cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def side_names():
    made: list[str] = []
    yield made
    for name in made:
        _drop(name)
    SideCopy.objects.filter(schema_name__in=made).delete()


@pytest.fixture
def clones():
    made: list[str] = []
    yield made
    Tenant = get_tenant_model()
    for name in made:
        Tenant.objects.filter(schema_name=name).delete()
        _drop(name)


def _backup(fmt: str) -> BackupRecord:
    record = backup_run(record_id=backup_record_create(schema_name=SCHEMA, fmt=fmt).pk)
    assert record.status == BackupRecord.Status.SUCCEEDED, record.error
    return record


@pytest.mark.parametrize("fmt", ["sql", "dump", "json"])
def test_a_side_copy_holds_the_backup_and_housekeeping_drops_it(fmt, side_names):
    live = table_fingerprints(SCHEMA, DEMO_TABLES)
    record = _backup(fmt)
    name = f"side_{fmt}_{record.pk}"
    side_names.append(name)
    with schema_context(SCHEMA):  # a later edit: the side copy keeps the backup's moment, the tenant keeps the edit
        notes = Patient.objects.get(pk=1).notas
        Patient.objects.filter(pk=1).update(notas="editado después")
    edited = table_fingerprints(SCHEMA, DEMO_TABLES)
    try:
        report = restore_side_copy(schema=SCHEMA, record=record, into=name, actor={"test": True})
        assert report.ok and report.row_counts["clinic_patient"] == (1200, 1200)
        assert table_fingerprints(name, DEMO_TABLES) == live
        assert table_fingerprints(SCHEMA, DEMO_TABLES) == edited  # the tenant is untouched
        assert not get_tenant_model().objects.filter(schema_name=name).exists()  # not a tenant
    finally:
        with schema_context(SCHEMA):
            Patient.objects.filter(pk=1).update(notas=notes)
    side = SideCopy.objects.get(schema_name=name, dropped_at=None)
    assert (side.origin_schema, side.record_id, side.tenant_uid) == (SCHEMA, record.pk, record.tenant_uid)
    assert timedelta(days=6, hours=23) < side.expires_at - timezone.now() <= timedelta(days=7)
    assert BackupEvent.objects.filter(record=record, action=BackupEvent.Action.SIDE_COPY, details__ok=True).exists()

    assert expire_side_copies() == 0  # not yet (the housekeeping task beat runs)
    assert side_copies_expire(now=timezone.now() + timedelta(days=8)) == [name]
    assert not schema_exists(name)
    side.refresh_from_db()
    assert side.dropped_at is not None


def test_a_side_copy_refuses_names_in_use_and_other_tenants_records(side_names, settings):
    record = _backup("sql")
    before = table_fingerprints(SCHEMA, DEMO_TABLES)
    with connection.cursor() as cur:
        cur.execute("CREATE SCHEMA side_taken")
    side_names.append("side_taken")
    for name, message in [("side_taken", "already exists"), ("clinica_norte", "a tenant's schema name"),
                          ("public", "keeps for itself"), ("pg_side", "keeps for itself"),
                          ("Bad-Name", "not a usable schema name"), ("x" * 64, "not a usable schema name")]:
        with pytest.raises(RestoreFailed, match=message):
            restore_side_copy(schema=SCHEMA, record=record, into=name)
    with pytest.raises(RestoreFailed, match="was taken from schema 'clinica_demo', not 'clinica_norte'"):
        restore_side_copy(schema="clinica_norte", record=record, into="side_other")
    assert not schema_exists("side_other")
    assert table_fingerprints(SCHEMA, DEMO_TABLES) == before
    assert not SideCopy.objects.filter(schema_name__in=["side_taken", "side_other"]).exists()


def test_restore_tenant_into_and_the_admin_list(side_names, ops_client, capsys):
    record = _backup("sql")
    name = f"side_cmd_{record.pk}"
    side_names.append(name)
    call_command("restore_tenant", SCHEMA, str(record.pk), "--into", name)
    out = capsys.readouterr().out
    assert f"restored into schema {name}" in out and "clinic_patient" in out
    with pytest.raises(CommandError, match="already exists"):
        call_command("restore_tenant", SCHEMA, str(record.pk), "--into", name)
    page = ops_client.get("/admin/backups/sidecopy/").content.decode()
    assert name in page and SCHEMA in page and record.file_name in page
    side = SideCopy.objects.get(schema_name=name)
    response = ops_client.post("/admin/backups/sidecopy/", {"action": "drop_now", "_selected_action": [side.pk]})
    assert response.status_code == 302
    assert not schema_exists(name)


def explode(**kwargs):
    raise ValueError("the anonymizer broke")


@pytest.mark.parametrize("fmt", ["sql", "json"])
def test_a_clone_is_a_new_tenant_with_the_backup_anonymized(fmt, clones):
    record = _backup(fmt)
    name = f"clon_{fmt}_{record.pk}"
    clones.append(name)
    report = clone_tenant(record=record, schema=name, domain=f"{name.replace('_', '-')}.localhost",
                          actor={"test": True})
    origin = get_tenant_model().objects.get(schema_name=SCHEMA)
    clone = get_tenant_model().objects.get(schema_name=name)
    assert str(clone.tenant_uid) == report.tenant_uid and clone.tenant_uid != origin.tenant_uid
    assert clone.nombre == origin.nombre
    assert clone.backup_schedule == "disabled" and clone.next_backup_at is None and clone.last_backup_at is None
    assert list(get_tenant_domain_model().objects.filter(tenant=clone).values_list("domain", flat=True)) == [
        f"{name.replace('_', '-')}.localhost"]
    assert not BackupRecord.objects.filter(tenant_uid=clone.tenant_uid).exists()
    assert table_fingerprints(name, CLINICAL) == table_fingerprints(SCHEMA, CLINICAL)  # visits, treatments ...
    assert report.anonymizer == "scrub_patients"
    with schema_context(name):
        assert Patient.objects.count() == 1200
        assert set(Patient.objects.values_list("nombre", flat=True)) == {"Paciente"}
        assert not Patient.objects.exclude(email__endswith="@example.invalid").exists()
        assert not Patient.objects.exclude(telefono="").exists()
        sample = Patient.objects.get(pk=5)
        assert (sample.apellidos, sample.email) == ("5", "paciente-5@example.invalid")
    with schema_context(SCHEMA):
        assert Patient.objects.exclude(email__endswith="@example.invalid").count() == 1200  # the origin keeps its own
    assert BackupEvent.objects.filter(record=record, action=BackupEvent.Action.CLONE, details__ok=True).exists()


def test_a_clone_refuses_bad_input_and_a_failing_anonymizer_leaves_nothing(clones, settings, capsys):
    record = _backup("sql")
    Tenant = get_tenant_model()
    count = Tenant.objects.count()
    for schema, domain, message in [("clon_x", "demo.localhost", "already in use"),
                                    ("clon_x", "not a host!", "not a host name"),
                                    ("clinica_norte", "x.localhost", "a tenant's schema name"),
                                    ("Clon", "x.localhost", "not a usable schema name")]:
        with pytest.raises(RestoreFailed, match=message):
            clone_tenant(record=record, schema=schema, domain=domain)
    damaged = _backup("sql")
    BackupRecord.objects.filter(pk=damaged.pk).update(damaged_at=timezone.now())
    damaged.refresh_from_db()
    with pytest.raises(RestoreFailed, match="marked damaged"):
        clone_tenant(record=damaged, schema="clon_x", domain="x.localhost")
    settings.BACKUPS_CLONE_ANONYMIZER = "tests.integration.test_side_copy_and_clone.explode"
    clones.append("clon_boom")
    with pytest.raises(RestoreFailed, match="the anonymizer broke"):
        clone_tenant(record=record, schema="clon_boom", domain="boom.localhost")
    assert Tenant.objects.count() == count
    assert not schema_exists("clon_boom") and not schema_exists("clon_x")
    assert not get_tenant_domain_model().objects.filter(domain__in=["boom.localhost", "x.localhost"]).exists()
    with pytest.raises(CommandError, match="already in use"):
        call_command("clone_tenant", str(record.pk), "clon_cmd", "--domain", "demo.localhost")
    settings.BACKUPS_CLONE_ANONYMIZER = ""
    clones.append("clon_cmd")
    call_command("clone_tenant", str(record.pk), "clon_cmd", "--domain", "clon-cmd.localhost",
                 "--set", "nombre=Copia de soporte")
    out = capsys.readouterr().out
    assert "not anonymized" in out and "BACKUPS_CLONE_ANONYMIZER is not set" in out
    assert Tenant.objects.get(schema_name="clon_cmd").nombre == "Copia de soporte"
    assert table_fingerprints("clon_cmd", DEMO_TABLES) == table_fingerprints(SCHEMA, DEMO_TABLES)
