"""Fixtures every test package shares, one instance per session whatever the order the tests run in: the real
database (django_db_setup), the session's S3 server (radosgw by default, see tests/servers/radosgw.py) and the
session's one real Celery worker. Defined here only: a fixture imported into another conftest would be a second
session fixture (a second worker on the same broker)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from tests.identities import give_fixed_identities
from tests.servers.radosgw import S3TestServer, chosen_kind, start_s3_server
from tests.workers import running_worker

SIGNATURES_MARK = "radosgw"
_STATE: dict[str, object] = {"server": None, "deselected": 0}


def pytest_configure(config: pytest.Config) -> None:
    # the session's tenant files (MEDIA_ROOT/<schema>/...): a fresh folder, seen by the worker too (its environment)
    media = Path(tempfile.mkdtemp(prefix="tb-test-media-"))
    os.environ["MEDIA_ROOT"] = str(media)
    settings.MEDIA_ROOT = media
    _STATE["media"] = media
    try:
        chosen_kind()
    except RuntimeError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.addinivalue_line(
        "markers", f"{SIGNATURES_MARK}: needs radosgw: it checks signatures, link expiry, encryption, upload dates",
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    if isinstance(_STATE.get("media"), Path):
        shutil.rmtree(_STATE["media"], ignore_errors=True)


def pytest_report_header(config: pytest.Config) -> str:
    return f"S3 server: {chosen_kind()} (TEST_S3)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With TEST_S3=moto, tests of refusals cannot fail, so they do not run (and the summary says how many)."""
    if chosen_kind() != "moto":
        return
    kept = [item for item in items if item.get_closest_marker(SIGNATURES_MARK) is None]
    deselected = [item for item in items if item.get_closest_marker(SIGNATURES_MARK) is not None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
        _STATE["deselected"] = len(deselected)


def pytest_terminal_summary(terminalreporter) -> None:
    server = _STATE["server"]
    if isinstance(server, S3TestServer):
        terminalreporter.write_line(f"S3 tests ran against {server.describe()} (TEST_S3={server.kind}).")
    if _STATE["deselected"]:
        terminalreporter.write_line(
            f"TEST_S3=moto: {_STATE['deselected']} tests of signatures, links and encryption did not run "
            "(moto accepts any signature); CI runs them against radosgw.", red=True)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3TestServer]:
    """The session's S3 server. Never skipped: failing to start fails, naming what to do."""
    try:
        server = start_s3_server()
    except (RuntimeError, OSError) as exc:
        pytest.fail(f"The S3 test server ({chosen_kind()}) did not start: {exc}", pytrace=False)
    _STATE["server"] = server
    yield server
    server.stop()


@pytest.fixture(scope="session")
def django_db_setup(django_db_blocker) -> None:
    """Use the database `make test` created (not a test_ copy): pg_dump and workers must see it too."""
    name = settings.DATABASES["default"]["NAME"]
    if not name.endswith("_test"):
        pytest.exit(f"Refusing to run against database {name!r}: run the suite with `make test`.", returncode=2)
    with django_db_blocker.unblock():
        call_command("migrate_schemas", shared=True, verbosity=0, interactive=False)
        call_command("create_demo_clinics", quiet=True, patients=1200)
        give_fixed_identities()


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker, s3_server):
    """The session's one real worker on the real broker (every package uses it, so the suite runs in any
    order); it also knows the session's S3 server. Stopped by pid at the end."""
    from tests.s3env import reset_bucket, s3_env

    reset_bucket(s3_server)
    with running_worker(name="tests", log_name="test-worker.log", extra_env=s3_env(s3_server)) as proc:
        yield proc
