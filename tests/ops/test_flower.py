"""Flower as the project starts it (`python -m project.flower`): every page, /metrics included, needs the login."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from django.conf import settings

from tests.servers.moto_s3 import free_port


def _start(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "project.flower", "--address=127.0.0.1", f"--port={port}"],
                                cwd=settings.BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def test_flower_metrics_need_the_login_too():
    port = free_port()
    log = Path(settings.BASE_DIR) / "var" / "test-flower.log"
    proc = _start({**os.environ, "FLOWER_BASIC_AUTH": "ops:test-password"}, port, log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"flower exited with {proc.returncode}; see {log}"
            try:
                requests.get(f"{base}/healthcheck", timeout=2)
                break
            except requests.RequestException:
                assert time.monotonic() < deadline, f"flower did not answer within 60 s; see {log}"
                time.sleep(0.3)
        assert requests.get(f"{base}/metrics", timeout=10).status_code == 401
        assert requests.get(f"{base}/metrics", auth=("ops", "wrong"), timeout=10).status_code == 401
        metrics = requests.get(f"{base}/metrics", auth=("ops", "test-password"), timeout=10)
        assert metrics.status_code == 200 and "flower_" in metrics.text
        assert requests.get(f"{base}/", timeout=10).status_code == 401
        assert requests.get(f"{base}/", auth=("ops", "test-password"), timeout=10).status_code == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def test_flower_refuses_to_start_without_credentials():
    env = {k: v for k, v in os.environ.items() if k not in ("FLOWER_BASIC_AUTH", "FLOWER_AUTH")}
    out = subprocess.run([sys.executable, "-m", "project.flower"], cwd=settings.BASE_DIR, capture_output=True,
                         text=True, env={**env, "FLOWER_BASIC_AUTH": " "}, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == "Flower needs FLOWER_BASIC_AUTH=user:password in the environment."
