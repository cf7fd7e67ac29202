"""What the benchmarks that run Django in a child process share: its environment, its start, Redis clean-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent


def child_env(*, database: str, redis_db: int, key_prefix: str, **extra: str) -> dict[str, str]:
    """This environment pointed at the bench's own database and Redis database, with its own queue prefix.

    The servers of DATABASE_URL and REDIS_URL are kept; only the database name and number are replaced, so
    a benchmark never touches the demo's or the tests' data.
    """
    env = dict(os.environ)
    db_url = env.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tenant_backups")
    redis_url = env.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    env.update({
        "DATABASE_URL": urlunsplit(urlsplit(db_url)._replace(path=f"/{database}")),
        "REDIS_URL": urlunsplit(urlsplit(redis_url)._replace(path=f"/{redis_db}")),
        "CELERY_QUEUE_PREFIX": key_prefix,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DJANGO_DEBUG": env.get("DJANGO_DEBUG", "1"),
        "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    })
    env.update(extra)
    return env


def run_in_child(script: str, *, database: str, env: dict[str, str]) -> None:
    """Create the bench database if needed, then run `script --child` with `env`; raise if it failed."""
    subprocess.run([sys.executable, str(ROOT / "scripts" / "services.py"), "createdb", database], check=True, cwd=ROOT)
    proc = subprocess.run([sys.executable, str(Path(script).resolve()), "--child"], env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(script).stem}'s child process failed with status {proc.returncode}")


def purge_prefix(client, prefix: str) -> None:
    """Delete the keys under `prefix` (queues, bindings, unacked messages) from a Redis database, never FLUSHDB."""
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
