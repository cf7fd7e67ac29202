"""Readiness: can this process reach its database, its broker and its storage, each within a short timeout."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from backups.conf import backups_settings
from backups.ops import broker

logger = logging.getLogger(__name__)

# Few threads, shared: a check that hangs past its timeout (a black-holed host) keeps its thread until the
# socket gives up, and later probes queue behind it and time out at once instead of piling up threads.
_executor = ThreadPoolExecutor(max_workers=6, thread_name_prefix="backups-readyz")


@dataclass(frozen=True)
class CheckResult:
    """One dependency's answer."""

    name: str
    ok: bool
    seconds: float
    error: str = ""  # the exception's class name or "timeout": details go to the log, not to the caller

    def as_dict(self) -> dict:
        out = {"status": "ok" if self.ok else "error", "seconds": round(self.seconds, 4)}
        if self.error:
            out["error"] = self.error
        return out


def check_database(timeout: float) -> None:
    """SELECT 1 on a fresh connection of this thread, closed afterwards (the probe thread keeps nothing open)."""
    from django.db import connection

    try:
        with connection.cursor() as cur:
            cur.execute("SELECT set_config('statement_timeout', %s, false)", [str(int(timeout * 1000))])
            cur.execute("SELECT 1")
            cur.fetchone()
    finally:
        connection.close()


def check_broker(timeout: float) -> None:
    """PING the broker."""
    broker.ping(timeout=timeout)


def broker_trouble(timeout: float | None = None) -> str:
    """Why the broker cannot carry messages now ('' when it can), in words for the overdue check's reader.

    A Redis at maxmemory or a read-only replica answers PING and refuses every new message: beat's ticks and the
    dispatcher fail with a log line only, so the tenants falling behind are the first sign ops see.
    """
    timeout = float(backups_settings.BACKUPS_HEALTH_TIMEOUT_SECONDS if timeout is None else timeout)
    try:
        broker.ping(timeout=timeout)
    except Exception as exc:  # any failure is the answer
        text = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
        if type(exc).__name__ in ("OutOfMemoryError", "ReadOnlyError"):
            return (f"the broker refuses writes ({text}): no message can be queued. Raise Redis's maxmemory or free "
                    "memory (keep maxmemory-policy noeviction), or point the workers at the writable primary.")
        return f"the broker does not answer ({text})."
    return ""


def check_storage(timeout: float) -> None:
    """The configured backend's own check (local: the root is writable; S3: HEAD bucket; Supabase: the bucket)."""
    from backups.storage import get_storage

    get_storage().check()


CHECKS: dict[str, Callable[[float], None]] = {
    "database": check_database, "broker": check_broker, "storage": check_storage,
}


_last: tuple[float, list[CheckResult]] | None = None
_last_lock = threading.Lock()


def readiness_cached() -> list[CheckResult]:
    """readiness(), reused for BACKUPS_READYZ_CACHE_SECONDS: /readyz is anonymous, so a flood of probes costs
    one round of checks (an S3 HEAD, a connection) a second per process, not one each."""
    global _last
    ttl = backups_settings.BACKUPS_READYZ_CACHE_SECONDS or 0.0
    with _last_lock:
        if ttl > 0 and _last is not None and time.monotonic() - _last[0] < ttl:
            return _last[1]
        results = readiness()
        _last = (time.monotonic(), results)
        return results


def readiness(timeout: float | None = None) -> list[CheckResult]:
    """Run every check at once in the probe threads; a check that has not answered after `timeout` fails."""
    timeout = float(backups_settings.BACKUPS_HEALTH_TIMEOUT_SECONDS if timeout is None else timeout)
    started = time.monotonic()
    futures = {name: _executor.submit(_timed, check, timeout) for name, check in CHECKS.items()}
    results = []
    for name, future in futures.items():
        remaining = max(0.0, timeout - (time.monotonic() - started))
        try:
            seconds = future.result(timeout=remaining)
        except FutureTimeout:
            future.cancel()
            logger.warning("readiness: %s did not answer within %.1f s", name, timeout)
            results.append(CheckResult(name, False, time.monotonic() - started, "timeout"))
        except Exception as exc:  # any failure of a dependency is an answer, not an error of the probe
            logger.warning("readiness: %s failed: %s: %s", name, type(exc).__name__, exc)
            results.append(CheckResult(name, False, time.monotonic() - started, type(exc).__name__))
        else:
            results.append(CheckResult(name, True, seconds))
    return results


def _timed(check: Callable[[float], None], timeout: float) -> float:
    started = time.monotonic()
    check(timeout)
    return time.monotonic() - started
