"""Helpers of the ops tests: read /metrics as numbers, a port nothing listens on."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

from prometheus_client.parser import text_string_to_metric_families


def parse_metrics(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted label pairs): value} of an exposition text."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(client, token: str) -> dict[tuple[str, tuple], float]:
    """GET /metrics with the token and parse it."""
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return parse_metrics(response.content.decode())


def value(metrics: dict, name: str, **labels) -> float | None:
    """One sample's value, None when absent."""
    return metrics.get((name, tuple(sorted(labels.items()))))


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port that is bound (nobody else gets it) but not listening: connections are refused at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()
