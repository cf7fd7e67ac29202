"""recover_deployment: a whole deployment back from its storage alone, on an empty database, and its bad inputs.

One private deployment is built once (its own database and storage folder, through manage.py as an operator
would): three demo clinics backed up in three formats, the public schema backed up, then one clinic changed and
backed up again and a fourth clinic created and backed up (both after the public backup). Each test recovers
into a fresh empty database from that storage or from a tampered copy of it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.integration.deployments import Deployment

CLINICS = {"clinica_demo": "sql", "clinica_sonrisa": "dump", "clinica_norte": "json"}
LATE = "clinica_late"
SKIP_PUBLIC = ("backups_", "django_celery_beat_periodictasks")  # the catalog is rebuilt, not compared row by row


class Built:
    """The source deployment's storage and what its data looked like."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.storage = deployment.storage
        self.public: dict = {}
        self.tenants: dict[str, dict] = {}
        self.files: dict[str, dict] = {}
        self.keys: set[str] = set()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    source = Deployment("drsrc", tmp_path_factory.mktemp("dr") / "storage")
    source.create_empty()
    source.manage("migrate_schemas", "--shared", "-v", "0")
    source.manage("create_demo_clinics", "--patients", "30", "--quiet")
    source.manage("setup_backup_schedule")
    source.python("from accounts.models import User; User.objects.create_superuser('ops', 'ops@x.org', 'pw-1')")
    for schema, fmt in CLINICS.items():
        source.manage("backup_tenant", schema, "--format", fmt, "--no-progress")
    source.manage("backup_tenant", "public", "--no-progress")
    built = Built(source)
    built.public = source.fingerprints("public", skip=SKIP_PUBLIC)
    # after the public backup: a change backed up again, and a new clinic
    source.python("from django_tenants.utils import schema_context\n"
                  "from clinic.models import Patient\n"
                  "with schema_context('clinica_demo'):\n"
                  "    p = Patient.objects.first(); p.pk = None; p.save()")
    source.manage("backup_tenant", "clinica_demo", "--no-progress")
    source.python("from tenants.models import Clinica, Domain\n"
                  "from django_tenants.utils import schema_context\n"
                  "from clinic.demo import fill_clinic\n"
                  f"t = Clinica(schema_name='{LATE}', nombre='Late'); t.save(verbosity=0)\n"
                  f"Domain.objects.create(tenant=t, domain='late.localhost', is_primary=True)\n"
                  f"with schema_context('{LATE}'):\n    fill_clinic('{LATE}', patients=10)")
    source.manage("backup_tenant", LATE, "--format", "dump", "--no-progress")
    for schema in [*CLINICS, LATE]:
        built.tenants[schema] = source.fingerprints(schema)
        built.files[schema] = source.files(schema)
        assert built.files[schema], f"{schema} has no files"
    built.keys = {r[0] for r in source.query("SELECT storage_key FROM backups_backuprecord WHERE status = 'succeeded'")}
    source.drop()
    shutil.rmtree(source.media)  # the disaster: database and media are gone, the backup storage is left
    yield built


def _recover(target: Deployment, *args: str):
    return target.manage("recover_deployment", "--noinput", *args, check=False)


# a json backup holds the tenant's models only: these are re-made by its migrations, with other ids and times
JSON_REMADE = ("django_content_type", "auth_permission", "django_migrations")


def _assert_tenants_equal(target: Deployment, built: Built, schemas) -> None:
    for schema in schemas:
        skip = JSON_REMADE if CLINICS.get(schema) == "json" else ()
        expected = {t: f for t, f in built.tenants[schema].items() if t not in skip}
        assert target.fingerprints(schema, skip=skip) == expected, schema
        assert target.files(schema) == built.files[schema], schema


def test_recover_deployment_brings_back_public_catalog_and_every_tenant(built, tmp_path):
    target = Deployment("dr1", built.storage)
    target.create_empty()
    try:
        run = _recover(target)
        assert run.returncode == 0, run.stdout + run.stderr
        out = run.stdout
        assert "public schema: restored from public/" in out
        assert f"{LATE}: tenant recreated" in out  # created after the public backup: known from its manifest only
        assert "[4/4]" in out and "tenants restored: 4, kept (already there): 0, failed: 0" in out
        _assert_tenants_equal(target, built, [*CLINICS, LATE])
        public = target.fingerprints("public", skip=SKIP_PUBLIC, where={"tenants_clinica": f"schema_name <> '{LATE}'",
                                                                       "tenants_domain": "domain <> 'late.localhost'"})
        assert public == built.public  # tenants, domains, operators, beat's entries, migrations
        # the catalog: every succeeded backup of the lost deployment is there and restorable again
        rows = dict(target.query("SELECT storage_key, status FROM backups_backuprecord"))
        assert built.keys <= set(rows) and {rows[k] for k in built.keys} == {"succeeded"}
        jobs = target.query("SELECT schema_name, status FROM backups_restorejob WHERE report->>'recover_deployment' "
                            "= 'true' ORDER BY 1")
        assert jobs == sorted((s, "succeeded") for s in [*CLINICS, LATE])
        # the newest backup of the changed clinic (taken after the public backup) is the one restored
        again = _recover(target)  # resumes: nothing left to do
        assert again.returncode == 0, again.stdout + again.stderr
        assert "kept: the database already holds 4 tenants" in again.stdout
        assert "tenants restored: 0, kept (already there): 4, failed: 0" in again.stdout
        _assert_tenants_equal(target, built, [*CLINICS, LATE])
    finally:
        target.drop()


def test_dry_run_says_what_it_would_do_and_changes_nothing(built):
    target = Deployment("dr2", built.storage)
    target.create_empty()
    try:
        run = target.manage("recover_deployment", "--dry-run", check=False)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "public schema: would be restored from public/" in run.stdout
        assert all(f"would restore {s} from {s}/" in run.stdout for s in [*CLINICS, LATE])
        assert target.query("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]
    finally:
        target.drop()


def test_without_a_public_backup_tenants_come_back_from_their_manifests_and_the_run_fails(built, tmp_path):
    storage = Deployment("x", built.storage).copy_storage(tmp_path / "storage")
    for path in (storage / "public").rglob("*"):
        if path.is_file():
            path.unlink()
    target = Deployment("dr3", storage)
    target.create_empty()
    try:
        run = _recover(target)
        assert run.returncode == 1
        assert "the storage holds no public-schema backup" in run.stdout
        assert "not everything could be recovered" in run.stderr
        _assert_tenants_equal(target, built, [*CLINICS, LATE])
        uids = {s: u for s, u in target.query("SELECT schema_name, tenant_uid::text FROM tenants_clinica")}
        for schema in [*CLINICS, LATE]:  # the identity each tenant's backups were made under
            assert any(p.name == uids[schema] for p in (storage / schema).iterdir())
    finally:
        target.drop()


def test_a_tenant_whose_backups_are_all_damaged_is_reported_and_marked_and_the_others_go_on(built, tmp_path):
    storage = Deployment("x", built.storage).copy_storage(tmp_path / "storage")
    for path in (storage / "clinica_sonrisa").rglob("*"):
        if path.is_file() and not path.name.endswith(".manifest.json"):
            path.write_bytes(path.read_bytes()[:-10] + b"0123456789")  # same size, other bytes
    target = Deployment("dr4", storage)
    target.create_empty()
    try:
        run = _recover(target)
        assert run.returncode == 1, run.stdout + run.stderr
        assert "FAILED clinica_sonrisa: all 1 backups failed their check" in run.stdout
        _assert_tenants_equal(target, built, ["clinica_demo", "clinica_norte", LATE])
        assert target.query("SELECT 1 FROM pg_namespace WHERE nspname = 'clinica_sonrisa'") == []
        assert target.query("SELECT status FROM backups_restorejob WHERE schema_name = 'clinica_sonrisa'") == [
            ("failed",)]
        assert target.query("SELECT count(*) FROM backups_backuprecord WHERE schema_name = 'clinica_sonrisa' "
                            "AND damaged_at IS NOT NULL") == [(1,)]
    finally:
        target.drop()


def test_a_manifest_signed_with_an_unknown_key_is_refused_and_reported(built, tmp_path):
    storage = Deployment("x", built.storage).copy_storage(tmp_path / "storage")
    (key,) = [p for p in (storage / LATE).rglob("*.manifest.json")]
    manifest = json.loads(key.read_text())
    manifest["signature"]["value"] = hashlib.sha256(b"someone else").hexdigest()
    key.write_text(json.dumps(manifest))
    target = Deployment("dr5", storage)
    target.create_empty()
    try:
        run = _recover(target)
        assert run.returncode == 1
        assert "its manifest is not signed by this deployment" in run.stdout
        assert LATE not in [s for (s,) in target.query("SELECT schema_name FROM tenants_clinica")]
        _assert_tenants_equal(target, built, list(CLINICS))
    finally:
        target.drop()


def test_storage_of_another_deployment_or_none_is_refused_with_nothing_changed(built, tmp_path):
    target = Deployment("dr6", tmp_path / "empty")
    target.create_empty()
    try:
        run = _recover(target)
        assert run.returncode == 1 and "holds no backups (wrong bucket or prefix?)" in run.stderr
        assert run.stderr.count("\n") == 1  # one sentence, no traceback
        other = Deployment("dr6", built.storage, BACKUPS_MANIFEST_KEY="another deployment's key")
        run = _recover(other)
        assert run.returncode == 1 and "has a manifest this deployment signed" in run.stderr
        assert target.query("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]
    finally:
        target.drop()


def test_an_unknown_s3_bucket_is_one_clear_line(built, s3_server, tmp_path):
    from tests.s3env import s3_env

    target = Deployment("dr7", Path("/nonexistent"), media=tmp_path / "media", BACKUPS_STORAGE="s3",
                        **{**s3_env(s3_server), "AWS_STORAGE_BUCKET_NAME": "no-such-bucket-h26"})
    target.create_empty()
    try:
        run = _recover(target)
        assert run.returncode == 1 and "cannot be listed" in run.stderr and "check the storage settings" in run.stderr
        assert "Traceback" not in run.stderr
    finally:
        target.drop()

