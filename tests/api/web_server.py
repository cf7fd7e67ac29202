"""The web process as the Procfile starts it (gunicorn -c project/gunicorn.conf.py), on a free loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from django.conf import settings

from tests.servers.moto_s3 import free_port


@contextmanager
def procfile_web(log_name: str, **env: str) -> Iterator[str]:
    """Yields the base URL once /healthz answers (nothing else is requested first); stopped by its pid."""
    port = free_port()
    log = Path(settings.BASE_DIR) / "var" / log_name
    log.parent.mkdir(exist_ok=True)
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "PYTHONUNBUFFERED": "1", **env}
    cmd = [sys.executable, "-m", "gunicorn", "project.wsgi:application", "-c", "project/gunicorn.conf.py"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=settings.BASE_DIR,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"gunicorn exited with {proc.returncode}; see {log}")
            try:
                requests.get(f"{base}/healthz", timeout=5)
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    pytest.fail(f"gunicorn did not answer within 30 s; see {log}")
                time.sleep(0.1)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
