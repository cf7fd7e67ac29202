"""Production defaults: without DEBUG, `manage.py check --deploy` finds nothing; plain HTTP only when asked for."""

import json
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECRET = secrets.token_urlsafe(50)
SHOW = ("import json; from django.conf import settings as s; print(json.dumps({n: getattr(s, n) for n in ("
        "'SECURE_SSL_REDIRECT', 'SECURE_HSTS_SECONDS', 'SECURE_HSTS_INCLUDE_SUBDOMAINS', 'SESSION_COOKIE_SECURE', "
        "'CSRF_COOKIE_SECURE', 'SECURE_PROXY_SSL_HEADER')}))")


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    """manage.py in a clean environment, as a deployment starts it: only what is given here."""
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], cwd="/", capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "DJANGO_SECRET_KEY": SECRET, **env}, timeout=120)


def _settings(**env: str) -> dict:
    out = _manage("shell", "-c", SHOW, **env)
    assert out.returncode == 0, out.stderr[-1500:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_production_defaults_pass_check_deploy():
    out = _manage("check", "--deploy", "--fail-level", "WARNING")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "security.W" not in out.stdout + out.stderr
    assert _settings() == {
        "SECURE_SSL_REDIRECT": True, "SECURE_HSTS_SECONDS": 365 * 86400, "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SESSION_COOKIE_SECURE": True, "CSRF_COOKIE_SECURE": True,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
    }


def test_plain_http_is_a_deliberate_setting_and_each_default_can_be_changed():
    local = _settings(DJANGO_HTTPS="0")
    assert not any(local.values()), local
    out = _manage("check", "--deploy", DJANGO_HTTPS="0")
    for code in ("W004", "W008", "W012", "W016"):
        assert f"security.{code}" in out.stderr, out.stderr  # check --deploy still says what is off
    changed = _settings(DJANGO_SECURE_HSTS_SECONDS="3600", DJANGO_SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_SSL,on",
                        DJANGO_SECURE_SSL_REDIRECT="0")
    assert changed["SECURE_HSTS_SECONDS"] == 3600 and changed["SECURE_SSL_REDIRECT"] is False
    assert changed["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_SSL", "on"]
    assert changed["SESSION_COOKIE_SECURE"] is True


def test_debug_serves_plain_http_for_local_runs():
    assert not any(_settings(DJANGO_DEBUG="1").values())
