"""The real Celery worker the integration and API tests run against, and the test broker it listens on."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings


def purge_test_broker() -> int:
    """Delete the test queues' keys (CELERY_QUEUE_PREFIX) from the test Redis database; never FLUSHDB."""
    prefix = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("global_keyprefix", "")
    if not prefix:
        pytest.fail("The tests need their own CELERY_QUEUE_PREFIX (run them with `make test`).")
    client = redis.Redis.from_url(settings.REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    return len(keys)


@contextlib.contextmanager
def running_worker(*, name: str, log_name: str, extra_env: dict[str, str] | None = None
                   ) -> Iterator[subprocess.Popen]:
    """Start one worker on an empty test broker, wait for its `inspect ping`, stop it by pid on exit."""
    from project.celery import app
    from project.processes import start_worker, stop_process, wait_for_worker

    purge_test_broker()
    log = Path(settings.BASE_DIR) / "var" / log_name
    proc = start_worker(name=name, concurrency=2, log_file=log, extra_env=extra_env)
    try:
        wait_for_worker(app, proc, name=name)
    except RuntimeError as exc:
        stop_process(proc)
        pytest.fail(f"{exc} See {log}.")
    try:
        yield proc
    finally:
        stop_process(proc)
