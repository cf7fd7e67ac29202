"""manage.py outside `make`: a missing secret key or an unreachable database is one line, not a traceback."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), "list_backups", "clinica_demo"], cwd="/",
                          env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=120)


def test_no_secret_key_is_one_line():
    out = _run({})
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        'manage.py: DJANGO_SECRET_KEY is not set (set it, or DJANGO_DEBUG=1 for local use). '
        '(`make manage ARGS="..."` runs a command with the local environment).']


def test_an_unreachable_database_is_one_line():
    out = _run({"DJANGO_DEBUG": "1", "DATABASE_URL": "postgres://postgres@127.0.0.1:1/nothing"})
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("manage.py: the database is not reachable"), out.stderr
    assert "make services" in lines[0]


def test_without_database_url_it_says_which_database_it_uses():
    out = subprocess.run([sys.executable, str(ROOT / "manage.py"), "check"], cwd="/", capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "DJANGO_DEBUG": "1"}, timeout=120)
    assert out.stderr.splitlines()[0] == (
        "manage.py: DATABASE_URL is not set; using the default database tenant_backups at 127.0.0.1:5432 "
        '(`make manage ARGS="..."` uses var/services.env\'s).'), out.stderr
