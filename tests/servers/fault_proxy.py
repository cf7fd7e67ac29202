"""A TCP proxy that injects network faults between a client and a server, for storage fault tests.

    proxy = FaultProxy.start("127.0.0.1", 9000)
    proxy.url                        # http://127.0.0.1:<port>
    proxy.reset_after(2 << 20, connections=3)   # 3 connections are reset (RST), each once its client sent 2 MiB
    proxy.stall_after(1 << 20, seconds=15)      # one goes silent for 15 s once its server sent 1 MiB
    proxy.resets, proxy.stalls       # how many faults were injected
    proxy.stop()

Armed faults wait in order; each fires on the first connection (pooled or new) whose byte count in its direction
passes the fault's, so a fault meant for an upload's part lands on the connection carrying a part, not on one
that only ever carries small requests. Resets are sent as TCP RST (SO_LINGER 0), as a load balancer or a NAT
dropping a flow does; a stall keeps the connection open and forwards nothing, as a black-holed route does.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from dataclasses import dataclass


@dataclass
class _Fault:
    kind: str  # "reset" (after `after` bytes from the client) or "stall" (after `after` bytes from the server)
    after: int
    seconds: float = 0.0


class FaultProxy:
    """One listening socket on loopback; one forwarding thread per accepted connection."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.resets = 0
        self.stalls = 0
        self.connections = 0
        self._armed: list[_Fault] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._sockets: set[socket.socket] = set()

    @classmethod
    def start(cls, host: str, port: int) -> FaultProxy:
        proxy = cls((host, port))
        threading.Thread(target=proxy._accept, name="fault-proxy", daemon=True).start()
        return proxy

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset_after(self, sent_bytes: int, *, connections: int = 1) -> None:
        """Reset `connections` connections, each once its client has sent more than `sent_bytes` on it."""
        with self._lock:
            self._armed += [_Fault("reset", sent_bytes) for _ in range(connections)]

    def stall_after(self, received_bytes: int, *, seconds: float, connections: int = 1) -> None:
        """Stop forwarding the server's bytes on `connections` connections, each once its server has sent more
        than `received_bytes`, for `seconds` (the client sees a silent, open connection)."""
        with self._lock:
            self._armed += [_Fault("stall", received_bytes, seconds) for _ in range(connections)]

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()

    def stop(self) -> None:
        self._stopped.set()
        self.listener.close()
        with self._lock:
            for sock in list(self._sockets):
                _close(sock)

    # --- forwarding -------------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
                server.settimeout(None)
            except OSError:
                _close(client, reset=True)
                continue
            with self._lock:
                self.connections += 1
                self._sockets |= {client, server}
            threading.Thread(target=self._forward, args=(client, server), daemon=True).start()

    def _take(self, kind: str, moved: int) -> _Fault | None:
        """The first armed fault of `kind` that a connection which has moved `moved` bytes has passed."""
        with self._lock:
            for n, fault in enumerate(self._armed):
                if fault.kind == kind and moved > fault.after:
                    return self._armed.pop(n)
        return None

    def _forward(self, client: socket.socket, server: socket.socket) -> None:
        """Copy both directions in one thread (so a reset closes both sockets with nobody blocked on them); the
        fault fires once its direction's byte count is passed."""
        sent = received = 0
        peer = {client: server, server: client}
        try:
            while not self._stopped.is_set():
                ready, _, _ = select.select([client, server], [], [], 0.5)
                for source in ready:
                    data = source.recv(65536)
                    if not data:
                        return
                    if source is client:
                        fault = self._take("reset", sent + len(data))
                        if fault is not None:
                            server.sendall(data[: max(0, fault.after - sent)])
                            with self._lock:
                                self.resets += 1
                            _close(client, reset=True)
                            _close(server, reset=True)
                            return
                        sent += len(data)
                    else:
                        fault = self._take("stall", received + len(data))
                        if fault is not None:
                            head = data[: max(0, fault.after - received)]
                            client.sendall(head)
                            with self._lock:
                                self.stalls += 1
                            time.sleep(fault.seconds)
                            data = data[len(head):]
                        received += len(data)
                    peer[source].sendall(data)
        except OSError:
            pass
        finally:
            _close(client)
            _close(server)
            with self._lock:
                self._sockets -= {client, server}


def _close(sock: socket.socket, *, reset: bool = False) -> None:
    try:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass
