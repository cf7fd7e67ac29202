"""Every deployment layout the project ships runs every feature: the processes of the Procfile, docker-compose.yml
and render.yaml, started with their own start commands on loopback, take an API backup to `succeeded`.

A layout without a worker (render.yaml had none) leaves every API backup queued for ever. The commands the
layouts share are started once (one worker serves all of them); each distinct web command gets its own port
and its own backup. The processes use their own queue prefix, so the session's worker cannot be the one that
did the work.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests
import yaml
from django.conf import settings
from django_tenants.utils import schema_context
from rest_framework.authtoken.models import Token

from accounts.models import User
from backups.models import BackupRecord
from project.processes import stop_process
from tests.servers.moto_s3 import free_port

from .conftest import wait_for_record

ROOT = Path(settings.BASE_DIR)
ROLES = ("web", "worker", "beat")
DOMAINS = {"clinica_sonrisa": "sonrisa.localhost", "clinica_norte": "norte.localhost"}


def _role(command: str) -> str | None:
    if "gunicorn" in command:
        return "web"
    if "celery" in command and " worker" in command:
        return "worker"
    if "celery" in command and " beat" in command:
        return "beat"
    return None


def layout_commands() -> dict[str, dict[str, str]]:
    """{layout: {role: start command}} as each file writes them."""
    layouts: dict[str, dict[str, str]] = {"Procfile": {}, "docker-compose.yml": {}, "render.yaml": {}}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if _role(command):
            layouts["Procfile"][_role(command)] = command.strip()
    for service in yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"].values():
        command = service.get("command")
        if isinstance(command, str) and _role(command):
            layouts["docker-compose.yml"][_role(command)] = command
    for service in yaml.safe_load((ROOT / "render.yaml").read_text())["services"]:
        command = service.get("startCommand") or ""
        if service["type"] in ("web", "worker") and _role(command):
            layouts["render.yaml"][_role(command)] = command
    return layouts


def _loopback(command: str, port: int, tmp: Path) -> str:
    """The command as it would run in its container, bound to loopback and to files of this test."""
    return (command.replace("0.0.0.0:8000", f"127.0.0.1:{port}").replace("0.0.0.0", "127.0.0.1")
            .replace("/tmp/celerybeat.pid", str(tmp / f"beat-{port}.pid")))


@pytest.fixture
def started(tmp_path) -> Iterator[tuple[dict[str, dict[str, str]], dict[str, subprocess.Popen], dict[str, int]]]:
    """Every distinct start command of every layout, each running once; stopped by pid afterwards."""
    layouts = layout_commands()
    prefix = f"{settings.CELERY_BROKER_TRANSPORT_OPTIONS.get('global_keyprefix', '')}layout-{uuid.uuid4().hex[:8]}."
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "CELERY_QUEUE_PREFIX": prefix, "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "4", "PYTHONUNBUFFERED": "1",
           "BACKUPS_MANUAL_PER_HOUR": "1000", "API_THROTTLE_USER": "100000/min", "DJANGO_DEBUG": "1"}
    procs: dict[str, subprocess.Popen] = {}
    ports: dict[str, int] = {}
    try:
        for commands in layouts.values():
            for role, command in commands.items():
                if command in procs:
                    continue
                port = free_port()
                ports[command] = port
                proc_env = {**env, "PORT": str(port)}
                if role == "beat":  # its ticks go to queues nobody reads: this test checks it runs, not what it sends
                    proc_env["CELERY_QUEUE_PREFIX"] = prefix + "beat."
                log = open(tmp_path / f"{role}-{port}.log", "ab")  # noqa: SIM115 - the child keeps it
                procs[command] = subprocess.Popen(["sh", "-c", _loopback(command, port, tmp_path)], cwd=ROOT,
                                                  env=proc_env, stdout=log, stderr=subprocess.STDOUT,
                                                  start_new_session=True)
                log.close()
        yield layouts, procs, ports
    finally:
        for proc in procs.values():
            stop_process(proc, timeout=20)
        client = redis.Redis.from_url(settings.REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)


def _token(schema: str) -> str:
    with schema_context(schema):
        return Token.objects.get_or_create(user=User.objects.get(username=f"admin@{schema}"))[0].key


def _post_create(port: int, schema: str, proc: subprocess.Popen, log: Path) -> int:
    """POST create/ on the layout's web process, once it answers; the new record's id."""
    headers = {"Host": DOMAINS[schema], "Authorization": f"Token {_token(schema)}"}
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the web process exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            response = requests.post(f"http://127.0.0.1:{port}/api/backups/create/", headers=headers, timeout=30)
            break
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                pytest.fail(f"the web process did not answer within 90 s: {log.read_text()[-2000:]}")
            time.sleep(0.3)
    assert response.status_code == 202, response.text[:500]
    return response.json()["id"]


def test_every_shipped_layout_takes_an_api_backup_to_succeeded(started, tmp_path, forget_new_backups):
    layouts, procs, ports = started
    for name, commands in layouts.items():
        assert set(commands) == set(ROLES), f"{name} does not run {sorted(set(ROLES) - set(commands))}"
    webs = sorted({commands["web"] for commands in layouts.values()})
    assert len(webs) <= len(DOMAINS)
    created = {}
    for command, schema in zip(webs, DOMAINS, strict=False):
        port = ports[command]
        created[command] = _post_create(port, schema, procs[command], tmp_path / f"web-{port}.log")
    for command, record_id in created.items():
        record = wait_for_record(record_id, timeout=150)
        assert record.status == BackupRecord.Status.SUCCEEDED, (command, record.error)
    for layout, commands in layouts.items():
        for role, command in commands.items():
            assert procs[command].poll() is None, f"{layout}'s {role} exited: {command}"
    for command in {commands["beat"] for commands in layouts.values()}:
        log = (tmp_path / f"beat-{ports[command]}.log").read_text()
        assert "beat: Starting" in log, log[-2000:]
