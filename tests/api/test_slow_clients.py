"""Slow clients cannot hold the web tier: 40 slowloris connections (a header line every second, never ending
their request) and 20 trickling a body must not delay a legitimate request to the web process started as the
Procfile starts it; a request that does not arrive within GUNICORN_REQUEST_READ_TIMEOUT is closed."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests

from .web_server import procfile_web

SLOW_HEADS, SLOW_BODIES = 40, 20


@pytest.fixture(scope="module")
def procfile_layout(django_db_setup) -> Iterator[str]:  # noqa: F811
    """gunicorn with project/gunicorn.conf.py's own defaults (workers, threads, worker class)."""
    with procfile_web("test-slow-clients.log") as base:
        yield base


HEAD = b"GET /api/schema/ HTTP/1.1\r\nHost: demo.localhost\r\n"
BODY = b"POST /api/auth/token/ HTTP/1.1\r\nHost: demo.localhost\r\nContent-Type: application/json\r\n" \
       b"Content-Length: 1000\r\n\r\n"


def _slowloris(host: str, port: int, stop: threading.Event, opened: list, start: bytes) -> None:
    """One connection that sends the start of a request, then one more header line (or body byte) a second."""
    try:
        sock = socket.create_connection((host, port), timeout=5)
    except OSError:
        return
    opened.append(sock)
    try:
        sock.sendall(start)
        n = 0
        while not stop.wait(1.0):
            n += 1
            sock.sendall(b"X-Slow-%d: %d\r\n" % (n, n) if start == HEAD else b" ")
    except OSError:
        pass  # the server hung up on us: allowed
    finally:
        sock.close()


def test_a_legitimate_request_is_answered_while_60_slow_clients_trickle_their_requests(procfile_layout):
    url = urlsplit(procfile_layout)
    stop, opened = threading.Event(), []
    starts = [HEAD] * SLOW_HEADS + [BODY] * SLOW_BODIES
    slow = [threading.Thread(target=_slowloris, args=(url.hostname, url.port, stop, opened, start), daemon=True)
            for start in starts]
    for thread in slow:
        thread.start()
    try:
        time.sleep(2.5)  # every slow client has sent a few header lines
        assert len(opened) == len(starts)
        with requests.Session() as session:  # the second request comes on the kept-alive connection
            for path, host in (("/healthz", "localhost"), ("/api/docs/", "demo.localhost")):
                started = time.monotonic()
                response = session.get(f"{procfile_layout}{path}", headers={"Host": host}, timeout=5)
                elapsed = time.monotonic() - started
                assert response.status_code == 200, (path, response.status_code)
                assert elapsed < 2, f"{path} took {elapsed:.1f} s behind {len(starts)} slow clients"
    finally:
        stop.set()
        for thread in slow:
            thread.join(timeout=5)


def test_a_request_that_does_not_arrive_in_time_is_closed(django_db_setup):  # noqa: F811
    with procfile_web("test-slow-clients.log", GUNICORN_REQUEST_READ_TIMEOUT="1", WEB_CONCURRENCY="1") as base:
        url = urlsplit(base)
        with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
            sock.sendall(HEAD)
            started, closed, n = time.monotonic(), False, 0
            while not closed and time.monotonic() - started < 4:
                if select.select([sock], [], [], 0.3)[0]:  # the server's answer can only be to hang up
                    try:
                        closed = sock.recv(1) == b""
                    except OSError:
                        closed = True
                else:
                    n += 1
                    sock.sendall(b"X-Slow-%d: %d\r\n" % (n, n))  # trickling does not extend the deadline
            assert closed and time.monotonic() - started < 2.5, time.monotonic() - started
        response = requests.post(f"{base}/api/auth/token/", headers={"Host": "demo.localhost"}, timeout=5,
                                 json={"username": "admin@clinica_demo", "password": "demo-password"})
        assert response.status_code == 200 and response.json()["token"]  # a buffered body reaches the view
