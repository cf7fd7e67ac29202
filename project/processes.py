"""Start and stop a Celery worker as a child process (for `make demo` and the integration tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from backups.queues import ALL


def start_worker(*, name: str, concurrency: int = 2, log_file: Path, queues: tuple[str, ...] = ALL,
                 extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """A `celery worker` on the declared queues, logging to `log_file`."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "celery", "-A", "project", "worker", "-n", f"{name}@%h", "-Q", ",".join(queues),
           "-c", str(concurrency), "--pool", "prefork", "-l", "INFO", "--without-gossip", "--without-mingle",
           "-E"]
    env = {**os.environ, **(extra_env or {})}
    with open(log_file, "ab") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_for_worker(app, proc: subprocess.Popen, *, name: str, timeout: float = 60.0) -> None:
    """Block until the worker answers `inspect ping`; raise with a clear message if it died or never did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"The Celery worker exited with status {proc.returncode} before it was ready.")
        replies = app.control.inspect(timeout=1.0).ping() or {}
        if any(key.startswith(f"{name}@") for key in replies):
            return
    raise RuntimeError(f"The Celery worker did not answer a ping within {timeout:.0f} s.")


def stop_process(proc: subprocess.Popen, *, timeout: float = 30.0) -> None:
    """Warm shutdown (SIGTERM to the process group), then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def start_beat(*, log_file: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """`celery beat` with the database scheduler (exactly one per deployment)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pidfile = log_file.with_suffix(".pid")
    pidfile.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "celery", "-A", "project", "beat", "-l", "INFO", "--pidfile", str(pidfile)]
    env = {**os.environ, **(extra_env or {})}
    with open(log_file, "ab") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
