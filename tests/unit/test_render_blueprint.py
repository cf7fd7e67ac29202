"""render.yaml: every service's start command exists (its --help runs), secrets are never in the file."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SECRETS = ("SECRET", "PASSWORD", "ACCESS_KEY", "KEY_ID", "DSN", "TOKEN", "EMAIL_URL", "RECIPIENTS")


def _blueprint() -> dict:
    return yaml.safe_load((ROOT / "render.yaml").read_text())


def _help(command: str) -> subprocess.CompletedProcess:
    env_prefix, argv = {}, shlex.split(command)
    while argv and "=" in argv[0] and not argv[0].startswith("-"):
        key, value = argv.pop(0).split("=", 1)
        env_prefix[key] = value
    if argv[0] == "python":
        argv[0] = sys.executable
    elif argv[0] in ("gunicorn", "celery"):
        argv = [sys.executable, "-m", argv[0], *argv[1:]]
    env = {**os.environ, **env_prefix, "DJANGO_DEBUG": "1"}
    return subprocess.run([*argv, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_every_start_and_deploy_command_runs():
    services = [s for s in _blueprint()["services"] if s["type"] in ("web", "worker", "cron")]
    assert {s["type"] for s in services} >= {"web", "worker"}
    for service in services:
        for field in ("startCommand", "preDeployCommand"):
            for command in (service.get(field) or "").split("&&"):
                if command.strip():
                    out = _help(command.strip())
                    assert out.returncode == 0, (service["name"], command, out.stderr[-1500:])
                    assert "usage" in (out.stdout + out.stderr).lower(), (service["name"], command)


def test_a_worker_and_one_beat_run_beside_the_web_process():
    """Without a worker every backup the API creates stays queued (and every later create answers 409)."""
    workers = {s["name"]: s["startCommand"] for s in _blueprint()["services"] if s["type"] == "worker"}
    assert any(" worker " in cmd and "backups.dump.priority" in cmd for cmd in workers.values()), workers
    beats = [s for s in _blueprint()["services"] if " beat" in s.get("startCommand", "")]
    assert len(beats) == 1 and beats[0].get("numInstances") == 1, beats


def test_secrets_are_asked_for_or_generated_never_written():
    for group in _blueprint()["envVarGroups"]:
        for var in group["envVars"]:
            if any(word in var["key"] for word in SECRETS) or var["key"] == "DJANGO_ALLOWED_HOSTS":
                assert "value" not in var, var["key"]
                assert var.get("sync") is False or var.get("generateValue") is True, var["key"]


def test_services_refer_to_the_database_and_redis_of_the_blueprint():
    blueprint = _blueprint()
    names = {d["name"] for d in blueprint["databases"]} | {s["name"] for s in blueprint["services"]}
    for group in blueprint["envVarGroups"]:
        for var in group["envVars"]:
            ref = var.get("fromDatabase") or var.get("fromService")
            if ref:
                assert ref["name"] in names, var["key"]
