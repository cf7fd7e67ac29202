"""How DATABASES and the process's PG* variables become pg_dump's environment and our connections' parameters.

No server here: the settings of Django's default connection are swapped for the test, nothing connects.
(tests/integration/test_pgtools_tls.py shows the same settings reaching a TLS-only server.)
"""

from __future__ import annotations

import logging
import os

import pytest
from django.db import connections

from backups.postgres import pgtools


@pytest.fixture
def databases(monkeypatch):
    """Set the default connection's settings (never opened here) and the process environment."""
    for name in [k for k in os.environ if k.startswith("PG")]:
        monkeypatch.delenv(name)

    def use(**settings) -> None:
        base = {"NAME": "tenant_backups", "USER": "backup", "PASSWORD": "", "HOST": "db.internal", "PORT": 6432,
                "OPTIONS": {}}
        monkeypatch.setattr(connections["default"], "settings_dict", {**base, **settings})
    return use


def test_libpq_options_become_their_pg_variables(databases):
    databases(OPTIONS={"sslmode": "verify-full", "sslrootcert": "/etc/ssl/rds.pem", "sslcert": "/c.crt",
                       "sslkey": "/c.key", "sslcrl": "/crl.pem", "target_session_attrs": "read-write",
                       "application_name": "clinic-backups", "connect_timeout": 3, "options": "-c work_mem=64MB",
                       "passfile": "/run/secrets/pgpass"})
    env = pgtools.libpq_env()
    assert {k: env[k] for k in ("PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY", "PGSSLCRL",
                                "PGTARGETSESSIONATTRS", "PGAPPNAME", "PGCONNECT_TIMEOUT", "PGOPTIONS",
                                "PGPASSFILE")} == {
        "PGSSLMODE": "verify-full", "PGSSLROOTCERT": "/etc/ssl/rds.pem", "PGSSLCERT": "/c.crt",
        "PGSSLKEY": "/c.key", "PGSSLCRL": "/crl.pem", "PGTARGETSESSIONATTRS": "read-write",
        "PGAPPNAME": "clinic-backups", "PGCONNECT_TIMEOUT": "3", "PGOPTIONS": "-c work_mem=64MB",
        "PGPASSFILE": "/run/secrets/pgpass"}
    assert (env["PGHOST"], env["PGPORT"], env["PGUSER"], env["PGDATABASE"]) == (
        "db.internal", "6432", "backup", "tenant_backups")
    assert "PGPASSWORD" not in env


def test_process_pg_variables_stay_unless_databases_sets_the_same_parameter(databases, monkeypatch):
    monkeypatch.setenv("PGSSLMODE", "require")
    monkeypatch.setenv("PGSSLROOTCERT", "/etc/ssl/supabase.crt")
    monkeypatch.setenv("PGHOST", "elsewhere")
    monkeypatch.setenv("PGAPPNAME", "from-env")
    monkeypatch.setenv("PGPASSWORD", "from-env-secret")
    databases(OPTIONS={"sslmode": "verify-ca"}, PASSWORD="settings-secret")
    env = pgtools.libpq_env(dbname="scratch")
    assert env["PGSSLMODE"] == "verify-ca"  # OPTIONS beats the process
    assert env["PGSSLROOTCERT"] == "/etc/ssl/supabase.crt"  # kept
    assert env["PGHOST"] == "db.internal"  # HOST beats the process
    assert env["PGAPPNAME"] == "from-env"  # kept, not replaced by our default
    assert env["PGPASSWORD"] == "settings-secret"
    assert env["PGDATABASE"] == "scratch"


def test_defaults_only_fill_what_nobody_set(databases):
    databases(HOST="", PORT="")
    env = pgtools.libpq_env()
    assert env["PGAPPNAME"] == "tenant-backups" and env["PGCONNECT_TIMEOUT"] == "10"
    assert "PGHOST" not in env and "PGPORT" not in env  # libpq's defaults (a socket, 5432), as Django's own


def test_settings_beat_options_and_non_libpq_options_are_left_out(databases):
    databases(OPTIONS={"host": "option-host", "isolation_level": 3, "pool": True, "server_side_binding": True,
                       "keepalives_idle": 30, "sslmode": "require"})
    params = pgtools.connection_params()
    assert params["host"] == "db.internal"
    assert params["keepalives_idle"] == "30" and params["sslmode"] == "require"
    assert not {"isolation_level", "pool", "server_side_binding"} & set(params)


def test_a_parameter_without_a_variable_is_logged_not_dropped_silently(databases, caplog):
    pgtools._warn_not_passed.cache_clear()
    databases(OPTIONS={"keepalives_idle": 30, "sslpassword": "key-passphrase"})
    with caplog.at_level(logging.WARNING, logger="backups.postgres.pgtools"):
        env = pgtools.libpq_env()
    assert "key-passphrase" not in env.values()
    assert "'keepalives_idle'" in caplog.text and "'sslpassword'" in caplog.text
    assert "key-passphrase" not in caplog.text


def test_pg_dump_gets_the_dump_options_after_the_users_own(databases, settings):
    databases(OPTIONS={"options": "-c work_mem=64MB"})
    settings.BACKUPS_PG_DUMP_OPTIONS = "-c enable_mergejoin=off"
    assert pgtools.pg_dump_env()["PGOPTIONS"] == "-c work_mem=64MB -c enable_mergejoin=off"
    assert pgtools.libpq_env()["PGOPTIONS"] == "-c work_mem=64MB"  # psql and pg_restore run without them


def test_empty_dump_options_leave_pgoptions_alone(databases, settings):
    databases()
    settings.BACKUPS_PG_DUMP_OPTIONS = ""
    assert "PGOPTIONS" not in pgtools.pg_dump_env()


def test_client_tools_never_see_the_workers_secrets(databases, monkeypatch):
    """pg_dump and pg_restore get libpq's variables, the locale and HOME; not the storage keys or Django's secret."""
    for name, value in {"AWS_SECRET_ACCESS_KEY": "s3-secret", "DJANGO_SECRET_KEY": "django-secret",
                        "BACKUPS_MANIFEST_KEY": "hmac", "SUPABASE_KEY": "jwt", "LC_ALL": "C.UTF-8",
                        "HOME": "/home/worker", "PGSSLMODE": "require"}.items():
        monkeypatch.setenv(name, value)
    databases()
    for env in (pgtools.libpq_env(), pgtools.pg_dump_env(), pgtools.tool_env()):
        assert not {"AWS_SECRET_ACCESS_KEY", "DJANGO_SECRET_KEY", "BACKUPS_MANIFEST_KEY", "SUPABASE_KEY"} & set(env)
        assert env["LC_ALL"] == "C.UTF-8" and env["HOME"] == "/home/worker" and env["PGSSLMODE"] == "require"
