"""pg_dump's own session settings (BACKUPS_PG_DUMP_OPTIONS) reach the server, and a wrong one stops the worker."""

from __future__ import annotations

import subprocess

import pytest

from backups.core.errors import BackupConfigError
from backups.ops.checks import check_configuration
from backups.postgres import pgtools

pytestmark = pytest.mark.django_db


def _show(setting: str, env: dict[str, str]) -> str:
    """What a libpq client started with `env` (as pg_dump is) sees for `setting`."""
    return subprocess.run([pgtools.binaries().psql, "-X", "-At", "-c", f"SHOW {setting}"], env=env, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_pg_dump_sessions_start_with_the_dump_options(settings):
    assert settings.BACKUPS_PG_DUMP_OPTIONS == "-c enable_mergejoin=off -c jit=off"  # what the scale bench measured
    assert (_show("enable_mergejoin", pgtools.pg_dump_env()), _show("jit", pgtools.pg_dump_env())) == ("off", "off")
    assert _show("enable_mergejoin", pgtools.libpq_env()) == "on"  # only pg_dump's session
    settings.BACKUPS_PG_DUMP_OPTIONS = "-c work_mem=7MB"
    assert _show("work_mem", pgtools.pg_dump_env()) == "7MB"


def test_start_up_check_refuses_options_the_server_rejects(settings):
    check_configuration()
    settings.BACKUPS_PG_DUMP_OPTIONS = "-c no_such_setting_here=1"
    with pytest.raises(BackupConfigError, match="BACKUPS_PG_DUMP_OPTIONS='-c no_such_setting_here=1' is refused"):
        check_configuration()
