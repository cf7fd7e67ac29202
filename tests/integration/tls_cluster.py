"""A private PostgreSQL cluster that accepts TLS only, for the libpq-settings tests.

Started like scripts/services.py starts its fallback server (initdb on a free loopback port, as an
unprivileged user when we are root) and stopped by its own pid. Its certificates come from `openssl req`:
one CA that signs the server's certificate (for 127.0.0.1) and a client certificate for `postgres`, and a
second CA that signs nothing here (a root certificate that vouches for the wrong server). pg_hba.conf has
`hostssl` lines only and no Unix socket, so a connection without TLS, or without the client certificate,
is refused.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = secrets.token_urlsafe(16)  # made per run; reaches libpq through PGPASSWORD only
HBA = "hostssl all all 127.0.0.1/32 scram-sha-256 clientcert=verify-full\n"
CONF = ("\n# tests/integration/tls_cluster.py\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
        "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'ca.crt'\n"
        "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nlog_connections = on\n"
        "password_encryption = 'scram-sha-256'\n")


def _services():
    """scripts/services.py as a module (free_port, run_as_unprivileged, make_traversable, running_private_pg)."""
    spec = importlib.util.spec_from_file_location("tls_cluster_services", ROOT / "scripts" / "services.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def server_bin_dir() -> Path:
    """initdb and pg_ctl: BACKUPS_PG_BIN_DIR's, else the machine's PostgreSQL 15."""
    for candidate in (os.environ.get("BACKUPS_PG_BIN_DIR", ""), "/usr/lib/postgresql/15/bin"):
        if candidate and (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    raise RuntimeError("No PostgreSQL server binaries (initdb, pg_ctl) found: set BACKUPS_PG_BIN_DIR.")


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {proc.stderr[-2000:]}")


def make_certificates(where: Path) -> None:
    """ca.crt (signs server.crt and client.crt), other-ca.crt (signs nothing used here); EC keys: fast."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2",
                 "-subj", f"/CN=tenant-backups test {ca}", cwd=where)
    for name, subject, ext in (("server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1"),
                               ("client", "/CN=postgres", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=where)
        (where / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=where)
    for key in where.glob("*.key"):
        key.chmod(0o600)


@dataclass
class TlsCluster:
    """A running TLS-only cluster: where it listens, its files, and how to stop it."""

    port: int
    data_dir: Path
    certs: Path
    log: Path
    pid: int

    def options(self, **extra: str) -> dict[str, str]:
        """DATABASES OPTIONS that reach this cluster: verified TLS and the client certificate."""
        return {"sslmode": "verify-full", "sslrootcert": str(self.certs / "ca.crt"),
                "sslcert": str(self.certs / "client.crt"), "sslkey": str(self.certs / "client.key"), **extra}

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        """An autocommit admin connection, over TLS with the client certificate."""
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", password=PASSWORD,
                               dbname=dbname, autocommit=True, **self.options())

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """SIGINT (fast shutdown) to our own postmaster, SIGQUIT if it lingers after 5 s; removes its files."""
        try:
            os.kill(self.pid, signal.SIGINT)  # fast shutdown: ends sessions, no waiting for clients
            for _ in range(100):
                os.kill(self.pid, 0)
                time.sleep(0.05)
            os.kill(self.pid, signal.SIGQUIT)
        except ProcessLookupError:
            pass
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)


def start_tls_cluster() -> TlsCluster:
    """initdb, certificates, TLS-only pg_hba.conf, start on a free port; raises RuntimeError when it cannot."""
    svc = _services()
    bin_dir = server_bin_dir()
    as_user = svc.run_as_unprivileged()
    base = Path(tempfile.mkdtemp(prefix="tb-tls-cluster-"))
    data_dir, certs, log = base / "data", base / "certs", base / "server.log"
    certs.mkdir()
    make_certificates(certs)
    pwfile = base / "pw"
    pwfile.write_text(PASSWORD + "\n")
    log.touch()
    data_dir.mkdir(mode=0o700)
    if as_user:
        for path in (base, data_dir, log, pwfile):
            os.chown(path, as_user["user"], as_user["group"])
        svc.make_traversable(base)
        svc.make_traversable(bin_dir)
    code, out = svc.run([str(bin_dir / "initdb"), "-D", str(data_dir), "-U", "postgres", f"--pwfile={pwfile}",
                         "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync"], cwd=base, **as_user)
    pwfile.unlink()
    if code != 0:
        raise RuntimeError(f"initdb failed: {out[-2000:]}")
    for name in ("server.crt", "server.key", "ca.crt"):
        shutil.copy(certs / name, data_dir / name)
        if as_user:
            os.chown(data_dir / name, as_user["user"], as_user["group"])
    (data_dir / "server.key").chmod(0o600)
    with (data_dir / "postgresql.conf").open("a") as conf:
        conf.write(CONF)
    (data_dir / "pg_hba.conf").write_text(HBA)
    port = svc.free_port()
    code, out = svc.run([str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-l", str(log), "-w", "-t", "60",
                         "-o", f"-p {port}", "start"], cwd=base, start_new_session=True, **as_user)
    running = svc.running_private_pg(data_dir)
    if code != 0 or not running:
        text = log.read_text(errors="replace")[-2000:]
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"pg_ctl start failed: {out[-1000:]} {text}")
    return TlsCluster(port=port, data_dir=data_dir, certs=certs, log=log, pid=running[0])
