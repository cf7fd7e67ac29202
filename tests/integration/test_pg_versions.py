"""pg_dump is never older than the server it dumps; an older one is refused with the package to install."""

from pathlib import Path

import pytest

from backups.core.errors import BackupConfigError
from backups.postgres import pgtools


def test_the_pg_dump_used_is_never_older_than_the_server():
    server_major = pgtools.server_version_num() // 10000
    bins = pgtools.binaries()
    assert bins.major >= server_major
    for binary in (bins.pg_dump, bins.pg_restore, bins.psql):
        assert Path(binary).parent == Path(bins.pg_dump).parent  # one installation, one version


def test_only_older_binaries_are_refused_naming_the_client_package(settings, tmp_path):
    bins = pgtools.binaries()
    settings.BACKUPS_PG_BIN_DIR = str(Path(bins.pg_dump).parent)
    pgtools.find_binaries.cache_clear()
    try:
        newer = 99  # no such release is installed anywhere
        with pytest.raises(BackupConfigError, match=f"postgresql-client-{newer}"):
            pgtools.find_binaries(newer)
    finally:
        pgtools.find_binaries.cache_clear()
