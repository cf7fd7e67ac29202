"""docker-compose.yml: valid against the Compose specification, and every command it runs exists."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("migrate", "web", "worker", "beat", "flower")


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_the_compose_file_follows_the_compose_specification():
    out = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                          str(ROOT / "docker-compose.yml")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_app_process_waits_for_migrate_restarts_and_is_checked():
    services = _compose()["services"]
    for name in ("web", "worker", "beat", "flower"):
        service = services[name]
        assert service["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
        assert service["restart"] == "unless-stopped" and service["healthcheck"]["test"], name
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)  # nothing listens beyond the host by default
    assert services["migrate"]["restart"] == "no"
    assert "ensure_public_tenant" in services["migrate"]["command"]
    assert not any("--basic-auth" in str(s.get("command")) for s in services.values())  # never in argv
    assert services["postgres"]["image"] == "postgres:18"


def test_every_command_of_the_app_services_runs():
    for name in APP_SERVICES:
        command = _compose()["services"][name]["command"]
        if command.startswith("sh -c"):
            parts = [p.strip() for p in shlex.split(command)[2].split("&&")]
        else:
            parts = [command]
        for part in parts:
            argv = shlex.split(part)
            argv = [sys.executable, "-m", argv[0], *argv[1:]] if argv[0] in ("gunicorn", "celery") else \
                [sys.executable, *argv[1:]] if argv[0] == "python" else argv
            if "inspect" in argv:
                continue
            out = subprocess.run([*argv, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                                 env={**os.environ, "DJANGO_DEBUG": "1", "FLOWER_BASIC_AUTH": "x:y"})
            assert out.returncode == 0, (name, part, out.stderr[-1500:])
