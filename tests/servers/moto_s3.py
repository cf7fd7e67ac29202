"""moto's S3 server (`python -m moto.server`) in a subprocess: the fallback S3 server (TEST_S3=moto) for
machines where radosgw cannot run. moto accepts any signature and never expires a link; see
tests/servers/radosgw.py, which picks the server and empties buckets through the S3 API alone.

    server = MotoS3Server.start()
    server.endpoint_url   # http://127.0.0.1:<port>
    server.stop()         # terminate the subprocess (by its pid)

Its output goes to a log file, whose tail is quoted if it does not come up.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

START_TIMEOUT = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class MotoS3Server:
    """One `moto.server` subprocess on a free loopback port."""

    def __init__(self, process: subprocess.Popen, endpoint_url: str, log_path: Path) -> None:
        self.process = process
        self.endpoint_url = endpoint_url
        self.log_path = log_path

    @classmethod
    def start(cls, host: str = "127.0.0.1", timeout: float = START_TIMEOUT, attempts: int = 3) -> MotoS3Server:
        """Start the server and wait until it answers; RuntimeError (with its log) if it never does."""
        errors = []
        for _ in range(attempts):  # another process may grab the free port first
            port = free_port(host)
            log = tempfile.NamedTemporaryFile(prefix="moto-s3-", suffix=".log", delete=False)
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            # Fake credentials for the server's own use; the tests' clients pass theirs explicitly.
            env.setdefault("AWS_ACCESS_KEY_ID", "testing")
            env.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )
            log.close()
            server = cls(process, f"http://{host}:{port}", Path(log.name))
            try:
                server._wait_until_up(timeout)
            except RuntimeError as exc:
                server.stop()
                errors.append(str(exc))
                continue
            return server
        raise RuntimeError("moto's S3 server did not start:\n" + "\n".join(errors))

    def _wait_until_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto.server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"moto.server did not answer on {self.endpoint_url} within {timeout:.0f} s:\n"
                           f"{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Terminate the subprocess (this one only) and remove its log."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        try:
            self.log_path.unlink()
        except OSError:
            pass

    def __enter__(self) -> MotoS3Server:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


if __name__ == "__main__":  # a manual smoke run: start, print the endpoint, wait for Ctrl-C
    with MotoS3Server.start() as running:
        print(f"READY {running.endpoint_url}", flush=True)
        try:
            running.process.wait()
        except KeyboardInterrupt:
            pass
