"""A private PostgreSQL cluster for the chaos suite: initdb on a free loopback port, trust auth, restartable.

Started as an unprivileged user when we are root (PostgreSQL refuses root), stopped by its own pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.integration.tls_cluster import _services, server_bin_dir

CONF = ("\n# tests/chaos/cluster.py\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
        "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n"
        "max_locks_per_transaction = 256\n")


@dataclass
class PgCluster:
    """A running private cluster."""

    port: int
    data_dir: Path
    log: Path
    pid: int

    def url(self, dbname: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname, autocommit=True)

    def _pg_ctl(self, *args: str) -> None:
        svc = _services()
        code, out = svc.run([str(server_bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log),
                             "-w", "-t", "60", *args], cwd=self.data_dir.parent, start_new_session=True,
                            **svc.run_as_unprivileged())
        if code != 0:
            raise RuntimeError(f"pg_ctl {args[-1]} failed: {out[-1000:]} {self.log.read_text()[-1000:]}")
        running = svc.running_private_pg(self.data_dir)
        if running:
            self.pid = running[0]

    def restart(self) -> None:
        """Fast shutdown (every session is terminated, as in a crash or failover) and start again."""
        self._pg_ctl("-m", "fast", "-o", f"-p {self.port}", "restart")

    def stop(self) -> None:
        try:
            os.kill(self.pid, signal.SIGINT)
            for _ in range(200):
                os.kill(self.pid, 0)
                time.sleep(0.05)
            os.kill(self.pid, signal.SIGQUIT)
        except ProcessLookupError:
            pass
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)


def start_cluster() -> PgCluster:
    """initdb (trust on loopback), start on a free port; RuntimeError when it cannot."""
    svc = _services()
    bin_dir = server_bin_dir()
    as_user = svc.run_as_unprivileged()
    base = Path(tempfile.mkdtemp(prefix="tb-chaos-pg-"))
    data_dir, log = base / "data", base / "server.log"
    log.touch()
    data_dir.mkdir(mode=0o700)
    if as_user:
        for path in (base, data_dir, log):
            os.chown(path, as_user["user"], as_user["group"])
        svc.make_traversable(base)
        svc.make_traversable(bin_dir)
    code, out = svc.run([str(bin_dir / "initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust",
                         "--encoding=UTF8", "--locale=C", "--no-sync"], cwd=base, **as_user)
    if code != 0:
        raise RuntimeError(f"initdb failed: {out[-2000:]}")
    with (data_dir / "postgresql.conf").open("a") as conf:
        conf.write(CONF)
    (data_dir / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
    cluster = PgCluster(port=svc.free_port(), data_dir=data_dir, log=log, pid=0)
    cluster._pg_ctl("-o", f"-p {cluster.port}", "start")
    if not cluster.pid:
        raise RuntimeError(f"the chaos cluster did not start: {log.read_text()[-2000:]}")
    return cluster
