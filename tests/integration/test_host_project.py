"""The app on its own: a new django-tenants project, written from the README's instructions alone.

In a temporary folder: a project `hostsite` with its own tenant model (`customers.Client`, no `nombre`)
and user model (`people.Person`), the code blocks of the README's "Using the app in another
django-tenants project" section copied in verbatim, and the `backups` package installed there with pip
from this repository (the repository itself is not on the path, nor is the demo's `tasks` package).
It is migrated on a database of its own, a tenant with a staff user is created, a real Celery worker of
that project starts with the standard `autodiscover_tasks()`, and a backup is made through the API on
the tenant's domain, run by that worker, and downloaded with its checksum.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
SECTION = "## Using the app in another django-tenants project"
QUEUES = "backups.dispatch,backups.dump,backups.dump.priority,backups.record,backups.housekeeping,backups.restore"
PREFIX = "hostproject-test."

pytestmark = pytest.mark.worker


def readme_blocks() -> dict[str, str]:
    """The section's python code blocks, by the file named in their first line (`# customers/models.py`)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION):]
    section = section[:section.index("\n## ", len(SECTION))]
    blocks = {}
    for raw in re.findall(r"```python\n(.*?)```", section, flags=re.S):
        code = textwrap.dedent(raw)
        first, _, rest = code.partition("\n")
        name = first.lstrip("# ").split(" ")[0]
        blocks[name] = rest
    return blocks


BASE_SETTINGS = '''
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "host-project-test-only"
DEBUG = True
ALLOWED_HOSTS = [".localhost", "localhost"]
REDIS_URL = os.environ["REDIS_URL"]
DATABASES = {{"default": {{"ENGINE": "django_tenants.postgresql_backend", "NAME": "{name}", "USER": "{user}",
                          "PASSWORD": "{password}", "HOST": "{host}", "PORT": "{port}"}}}}
DATABASE_ROUTERS = ("django_tenants.routers.TenantSyncRouter",)
TENANT_MODEL = "customers.Client"
TENANT_DOMAIN_MODEL = "customers.Domain"
AUTH_USER_MODEL = "people.Person"
ROOT_URLCONF = "hostsite.urls_tenants"
PUBLIC_SCHEMA_URLCONF = "hostsite.urls_public"
MIDDLEWARE = [
    "django_tenants.middleware.main.TenantMainMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [{{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
              "OPTIONS": {{"context_processors": ["django.template.context_processors.request",
                                                  "django.contrib.auth.context_processors.auth",
                                                  "django.contrib.messages.context_processors.messages"]}}}}]
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
'''

SETUP_SCRIPT = '''
from django.db import connection
from django_tenants.utils import schema_context
from customers.models import Client, Domain
from people.models import Person

public = Client(schema_name="public", name="Operators")
public.save()
Domain.objects.create(domain="localhost", tenant=public, is_primary=True)
acme = Client(schema_name="acme", name="Acme")
acme.save()
Domain.objects.create(domain="acme.localhost", tenant=acme, is_primary=True)
with schema_context("acme"):
    Person.objects.create_user("boss", "boss@acme.example", "a-long-password", is_staff=True)
    Person.objects.create_user("clerk", "clerk@acme.example", "a-long-password")
print("ok")
'''

API_SCRIPT = '''
import hashlib, json, time
from django.test import Client as HttpClient

http = HttpClient(HTTP_HOST="acme.localhost")
out = {}
r = http.post("/api/auth/token/", {"username": "clerk", "password": "a-long-password"}, content_type="application/json")
clerk = r.json()["token"]
out["clerk_create"] = http.post("/api/backups/create/", {}, content_type="application/json",
                                HTTP_AUTHORIZATION="Token " + clerk).status_code
r = http.post("/api/auth/jwt/", {"username": "boss", "password": "a-long-password"}, content_type="application/json")
auth = "Bearer " + r.json()["access"]
r = http.post("/api/backups/create/", {}, content_type="application/json", HTTP_AUTHORIZATION=auth)
out["create"] = r.status_code
record = r.json()
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    detail = http.get(f"/api/backups/history/{record['id']}/", HTTP_AUTHORIZATION=auth).json()
    if detail["status"] not in ("queued", "running"):
        break
    time.sleep(0.3)
out["status"], out["error"], out["file_name"] = detail["status"], detail["error"], detail["file_name"]
out["created_by"] = detail["created_by"]
r = http.get(f"/api/backups/history/{record['id']}/download/", HTTP_AUTHORIZATION=auth)
body = b"".join(r.streaming_content) if r.status_code == 200 else b""
out["download"] = r.status_code
out["sha_ok"] = r.status_code == 200 and hashlib.sha256(body).hexdigest() == r["X-Backup-SHA256"] == detail["sha256"]
out["size"] = len(body)
other = HttpClient(HTTP_HOST="localhost").get("/api/backups/history/", HTTP_AUTHORIZATION=auth)
out["other_domain"] = other.status_code
out["other_body"] = other.content[:300].decode(errors="replace")
schema = http.get("/api/schema/", HTTP_ACCEPT="application/json")
out["schema"] = schema.status_code
out["schema_ops"] = sorted(schema.json()["paths"]) if schema.status_code == 200 else []
print("RESULT " + json.dumps(out))
'''


def _run(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(args[:4])} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def host_project(tmp_path_factory) -> dict:
    """The project's folder, its environment (its own database and queue prefix) and a cleanup."""
    root = tmp_path_factory.mktemp("hostproject")
    blocks = readme_blocks()
    assert {"customers/models.py", "settings.py", "urls_tenants.py", "celery.py"} <= set(blocks), list(blocks)
    url = urlsplit(settings.DATABASES["default"].get("TEST_URL") or os.environ["DATABASE_URL"])
    name = "hostproject_" + settings.DATABASES["default"]["NAME"]
    files = {
        "manage.py": "import os, sys\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'hostsite.settings')\n"
                     "from django.core.management import execute_from_command_line\n"
                     "execute_from_command_line(sys.argv)\n",
        "hostsite/__init__.py": "from .celery import app as celery_app\n",
        "hostsite/settings.py": BASE_SETTINGS.format(name=name, user=url.username or "postgres",
                                                     password=url.password or "", host=url.hostname or "127.0.0.1",
                                                     port=url.port or 5432)
                                + blocks["settings.py"]
                                + f'\nCELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = "{PREFIX}"\n'
                                + f'BACKUPS_LOCAL_ROOT = "{root / "stored"}"\n',
        "hostsite/urls_tenants.py": blocks["urls_tenants.py"],
        "hostsite/urls_public.py": "from django.contrib import admin\nfrom django.urls import path\n\n"
                                   "urlpatterns = [path('admin/', admin.site.urls)]\n",
        "hostsite/celery.py": blocks["celery.py"],
        "customers/__init__.py": "",
        "customers/migrations/__init__.py": "",
        "customers/models.py": blocks["customers/models.py"],
        "people/__init__.py": "",
        "people/migrations/__init__.py": "",
        "people/models.py": "from django.contrib.auth.models import AbstractUser\n\n\n"
                            "class Person(AbstractUser):\n    pass\n",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    site = root / "site"
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site),
          str(ROOT)], cwd=root, env=dict(os.environ))
    assert (site / "backups" / "migrations" / "0001_initial.py").is_file()
    assert not (site / "tasks").exists() and not (site / "project").exists()  # only the app is packaged
    redis_url = os.environ["REDIS_URL"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "BACKUPS_", "CELERY_"))}
    env.update({"PYTHONPATH": f"{site}{os.pathsep}{root}", "DJANGO_SETTINGS_MODULE": "hostsite.settings",
                "REDIS_URL": redis_url, "PYTHONDONTWRITEBYTECODE": "1"})
    for key in ("BACKUPS_PG_BIN_DIR",):
        if os.environ.get(key):
            env[key] = os.environ[key]
    services = [sys.executable, str(ROOT / "scripts" / "services.py")]
    _run([*services, "dropdb", name], cwd=ROOT, env=dict(os.environ))
    _run([*services, "createdb", name], cwd=ROOT, env=dict(os.environ))
    broker = redis.Redis.from_url(redis_url)
    try:
        yield {"root": root, "env": env, "site": site}
    finally:
        keys = list(broker.scan_iter(match=PREFIX + "*"))
        if keys:
            broker.delete(*keys)
        subprocess.run([*services, "dropdb", name], cwd=ROOT, capture_output=True)


def test_a_new_project_backs_up_through_its_own_worker_and_the_api(host_project):
    root, env = host_project["root"], host_project["env"]
    manage = [sys.executable, "manage.py"]
    _run([*manage, "makemigrations", "customers", "people", "-v", "0"], cwd=root, env=env)
    _run([*manage, "migrate_schemas", "--shared", "-v", "0"], cwd=root, env=env)
    assert "ok" in _run([*manage, "shell", "-c", SETUP_SCRIPT], cwd=root, env=env)
    _run([*manage, "setup_backup_schedule"], cwd=root, env=env)
    registered = _run([sys.executable, "-c", "import django; django.setup(); from hostsite.celery import app; "
                       "app.loader.import_default_modules(); print(sorted(app.tasks))"], cwd=root, env=env)
    assert "tasks.backups.run_backup" in registered and "tasks.backups.record_backup" in registered
    log = ROOT / "var" / "test-host-project-worker.log"
    with open(log, "ab") as out:
        worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "hostsite", "worker", "-Q", QUEUES,
                                   "-c", "1", "-n", "hostproject@%h", "-l", "INFO"], cwd=root, env=env,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        result = _run([*manage, "shell", "-c", API_SCRIPT], cwd=root, env=env, timeout=240)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    found = json.loads(result.split("RESULT ", 1)[1].splitlines()[0])
    assert found["clerk_create"] == 403  # not staff: the app's default admin predicate
    assert found["create"] == 202
    assert found["status"] == "succeeded", (found, log.read_text()[-3000:])
    assert found["file_name"].startswith("backup-sql-acme-") and found["file_name"].endswith(".sql.zst")
    assert found["created_by"]["email"] == "boss@acme.example"
    assert found["download"] == 200 and found["sha_ok"] and found["size"] > 0
    assert found["other_domain"] == 404, found["other_body"]  # the public domain serves no API
    assert found["schema"] == 200 and "/api/backups/create/" in found["schema_ops"]
    stored = list((root / "stored").rglob("*.sql.zst"))
    assert len(stored) == 1 and stored[0].parent.parent.name == "acme"
