"""Fixtures every test package shares: the session's S3 server (radosgw by default, see tests/servers/radosgw.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.radosgw import S3TestServer, chosen_kind, start_s3_server

SIGNATURES_MARK = "radosgw"
_STATE: dict[str, object] = {"server": None, "deselected": 0}


def pytest_configure(config: pytest.Config) -> None:
    try:
        chosen_kind()
    except RuntimeError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.addinivalue_line(
        "markers", f"{SIGNATURES_MARK}: needs radosgw: it checks signatures, link expiry, encryption, upload dates",
    )


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
