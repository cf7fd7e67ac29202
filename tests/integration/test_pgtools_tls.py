"""pg_dump, psql and our own connections keep the user's libpq settings: TLS to a server that accepts nothing else.

One private cluster for the module (tests/integration/tls_cluster.py): `hostssl` only, scram password plus
a client certificate signed by its CA. A connection that drops DATABASES OPTIONS or the process's PG*
variables (sslmode, sslrootcert, sslcert, sslkey) is refused there, so each test below fails if they are lost.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

import pytest
from django.db import connections

from backups.postgres import pgtools
from backups.postgres.dumpers import dump_with_pg_dump
from tests.integration.tls_cluster import PASSWORD, TlsCluster, start_tls_cluster

DB, SCHEMA, RESTORED = "tls_source", "tls_clinic", "tls_restored"


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[TlsCluster]:
    """The TLS-only cluster with a small tenant schema in DB; stopped by its pid at the end of the module."""
    try:
        cluster = start_tls_cluster()
    except (RuntimeError, OSError) as exc:
        pytest.fail(f"Could not start the private TLS PostgreSQL cluster (initdb, pg_ctl, openssl): {exc}")
    try:
        with cluster.connect() as admin:
            admin.execute(f"CREATE DATABASE {DB}")
            admin.execute(f"CREATE DATABASE {RESTORED}")
        with cluster.connect(DB) as conn:
            conn.execute(f"CREATE SCHEMA {SCHEMA}")
            conn.execute(f"CREATE TABLE {SCHEMA}.patient (id bigint PRIMARY KEY, name text NOT NULL)")
            conn.execute(f"INSERT INTO {SCHEMA}.patient SELECT g, 'patient ' || g FROM generate_series(1, 250) g")
        yield cluster
    finally:
        cluster.stop()


@contextlib.contextmanager
def default_database(cluster: TlsCluster, options: dict[str, str], dbname: str = DB) -> Iterator[None]:
    """Point Django's default connection at the TLS cluster for a moment (as a deployment on RDS would be)."""
    conn = connections["default"]
    saved = conn.settings_dict
    conn.close()
    conn.settings_dict = {**saved, "HOST": "127.0.0.1", "PORT": cluster.port, "USER": "postgres",
                          "PASSWORD": PASSWORD, "NAME": dbname, "OPTIONS": options}
    try:
        yield
    finally:
        conn.close()
        conn.settings_dict = saved


class _Bytes:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data.extend(data)


def _psql(sql: str, env: dict[str, str], *, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    bins = pgtools.find_binaries(15)
    args = [bins.psql, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"] + (["-c", sql] if sql else [])
    return subprocess.run(args, env=env, input=stdin, capture_output=True, timeout=60)


def test_pg_dump_and_psql_connect_with_the_tls_options_of_databases(tls_cluster, monkeypatch):
    """A backup's dump from the TLS-only server, then psql loads it into another database there."""
    spawned: list[tuple[list[str], dict[str, str]]] = []
    real_popen = subprocess.Popen

    def recording_popen(args, *a, **kw):
        spawned.append((list(args), dict(kw.get("env") or {})))
        return real_popen(args, *a, **kw)

    options = tls_cluster.options(application_name="tb-tls-dump", target_session_attrs="read-write")
    with default_database(tls_cluster, options):
        monkeypatch.setattr(subprocess, "Popen", recording_popen)
        sink = _Bytes()
        info = dump_with_pg_dump(SCHEMA, "sql", sink)
        monkeypatch.undo()
        restore_env = pgtools.libpq_env(dbname=RESTORED)

    assert info.row_counts == {"patient": 250}
    assert b"patient 250" in sink.data
    [(argv, env)] = [(a, e) for a, e in spawned if a[0].endswith("pg_dump") and "--version" not in a]
    assert PASSWORD not in " ".join(argv)
    assert env["PGPASSWORD"] == PASSWORD
    assert (env["PGSSLMODE"], env["PGSSLCERT"], env["PGTARGETSESSIONATTRS"]) == (
        "verify-full", options["sslcert"], "read-write")

    loaded = _psql("", restore_env, stdin=bytes(sink.data))
    assert loaded.returncode == 0, loaded.stderr.decode()
    counted = _psql(f"SELECT count(*) FROM {SCHEMA}.patient", restore_env)
    assert counted.stdout.decode().strip() == "250"

    authorized = [line for line in tls_cluster.log_text().splitlines() if "application_name=tb-tls-dump" in line]
    assert authorized and all("SSL enabled" in line for line in authorized)


def test_psql_and_connect_show_tls_and_the_client_certificate_in_pg_stat_ssl(tls_cluster):
    query = ("SELECT s.ssl, s.client_dn, a.application_name FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
             " WHERE pid = pg_backend_pid()")
    with default_database(tls_cluster, tls_cluster.options(application_name="tb-tls-check")):
        out = _psql(query, pgtools.libpq_env())
        with pgtools.connect() as conn:
            row = conn.execute(query).fetchone()
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().strip() == "t|/CN=postgres|tb-tls-check"
    assert row == (True, "/CN=postgres", "tb-tls-check")


def test_pg_variables_the_process_has_are_kept_unless_databases_sets_them(tls_cluster, monkeypatch):
    """TLS settings given only as PG* variables (no OPTIONS) still reach psql; DATABASES' HOST beats PGHOST."""
    certs = tls_cluster.certs
    monkeypatch.setenv("PGSSLMODE", "verify-full")
    monkeypatch.setenv("PGSSLROOTCERT", str(certs / "ca.crt"))
    monkeypatch.setenv("PGSSLCERT", str(certs / "client.crt"))
    monkeypatch.setenv("PGSSLKEY", str(certs / "client.key"))
    monkeypatch.setenv("PGHOST", "192.0.2.1")  # TEST-NET-1: unreachable, must be overridden by HOST
    with default_database(tls_cluster, {}):
        env = pgtools.libpq_env()
        out = _psql("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", env)
    assert env["PGHOST"] == "127.0.0.1" and env["PGSSLMODE"] == "verify-full"
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().strip() == "t"


def test_verify_full_refuses_a_server_its_root_certificate_does_not_vouch_for(tls_cluster):
    options = tls_cluster.options(sslrootcert=str(tls_cluster.certs / "other-ca.crt"))
    with default_database(tls_cluster, options):
        out = _psql("SELECT 1", pgtools.libpq_env())
    assert out.returncode != 0
    assert "certificate verify failed" in out.stderr.decode()
