"""gunicorn's threaded worker, with each request's head (and a small body) read by its event loop, not a thread.

gthread hands a connection to a thread as soon as its first bytes arrive, and the thread then blocks until the
whole head is in: 40 clients sending a header line every 2 s held all 16 threads of the default layout, and a
legitimate request waited 17.9 s. Here the worker's selector reads every connection without blocking until its
head has ended (and, when it says Content-Length, its body, up to GUNICORN_BODY_BUFFER_BYTES), then gives the
connection to a thread with those bytes, so threads only ever run requests whose input is all there. A request
not read within GUNICORN_REQUEST_READ_TIMEOUT seconds is closed. Bodies larger than the buffer, and chunked ones,
are read by the thread as before (the API takes none: Django refuses bodies over 2.5 MB before reading them).
TLS terminated by gunicorn itself, and HTTP/2 with prior knowledge, keep gthread's own behaviour.
"""

from __future__ import annotations

import errno
import os
import re
import selectors
import time
from functools import partial

from gunicorn.http2 import negotiation
from gunicorn.workers.gthread import TConn, ThreadWorker

HEAD_END = b"\r\n\r\n"
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*(\d{1,12})[ \t]*\r\n", re.IGNORECASE)
# A chunked body is read by the thread; so is one the client sends only after `100 Continue` (curl, over 1 KB).
READ_BY_THREAD = re.compile(rb"\r\n(transfer-encoding|expect)[ \t]*:", re.IGNORECASE)
MAX_HEAD = 64 * 1024  # past this the head is handed over as it is: gunicorn's limits answer 400 / 431


def _env_number(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


class BufferingThreadWorker(ThreadWorker):
    """ThreadWorker whose threads never wait for a slow client's request (see the module's docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout = _env_number("GUNICORN_REQUEST_READ_TIMEOUT", 10.0)
        self.body_buffer = int(_env_number("GUNICORN_BODY_BUFFER_BYTES", 256 * 1024))
        self.reading: dict[TConn, float] = {}  # connection -> the time its request must be in by

    def _buffers(self, conn: TConn) -> bool:
        return not self.cfg.is_ssl and not negotiation.prior_knowledge_allowed(self.cfg, conn.client)

    def accept(self, listener) -> None:
        """A new connection waits for its request in the selector, not in a thread."""
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, client_sock, client_addr, listener.getsockname())  # non-blocking
        if self._buffers(conn):
            self._read_request(conn)
        else:
            client_sock.setblocking(True)
            self.enqueue_req(conn)

    def on_client_socket_readable(self, conn: TConn, client) -> None:
        """A kept-alive connection's next request is read the same way."""
        if not self._buffers(conn):
            return super().on_client_socket_readable(conn, client)
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._read_request(conn)

    def _read_request(self, conn: TConn) -> None:
        conn.request_bytes = b""
        self.reading[conn] = time.monotonic() + self.read_timeout
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_request_readable, conn))
        self._on_request_readable(conn, conn.sock)  # often it is all there already

    def _on_request_readable(self, conn: TConn, _sock) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away before its request was in
            self._close_reading(conn)
            return
        conn.request_bytes += data
        if self._request_is_in(conn.request_bytes):
            self.poller.unregister(conn.sock)
            del self.reading[conn]
            conn.data_ready = True
            self.enqueue_req(conn)

    def _request_is_in(self, data: bytes) -> bool:
        end = data.find(HEAD_END)
        if end < 0:
            return len(data) > MAX_HEAD
        head = data[:end + 2]
        if READ_BY_THREAD.search(head):
            return True
        length = CONTENT_LENGTH.search(head)
        if not length or int(length.group(1)) > self.body_buffer:
            return True
        return len(data) - (end + len(HEAD_END)) >= int(length.group(1))

    def _close_reading(self, conn: TConn) -> None:
        self.reading.pop(conn, None)
        try:
            self.poller.unregister(conn.sock)
        except (OSError, KeyError, ValueError):
            pass
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """Also close connections whose request did not arrive within GUNICORN_REQUEST_READ_TIMEOUT."""
        super().murder_pending()
        now = time.monotonic()
        for conn in [c for c, deadline in self.reading.items() if deadline <= now]:
            self._close_reading(conn)

    def handle(self, conn: TConn):
        """In the thread: the bytes read so far go back in front of the parser, which then finds them."""
        data = getattr(conn, "request_bytes", b"")
        if data:
            conn.request_bytes = b""
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(data)
        return super().handle(conn)
