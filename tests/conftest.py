"""Fixtures every test package shares: the loopback S3 server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.moto_s3 import MotoS3Server


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3Server]:
    """moto's S3 server on a loopback port for the whole session. Never skipped: failing to start fails."""
    try:
        server = MotoS3Server.start()
    except (RuntimeError, OSError) as exc:
        pytest.fail(f"Could not start the moto S3 server (`python -m moto.server`; is moto[server] installed?): {exc}")
    yield server
    server.stop()
