"""A Redis at maxmemory (noeviction) while a backup runs and while beat ticks (issue 22, part 3 and 6).

Redis refuses every write then (LPUSH of a new message, the ZADD that records a taken one as unacknowledged, a
result) but still answers PING and reads. The workers and beat must stay up through it, the overdue check must say
what is wrong, and once Redis accepts writes again every due slot must end with exactly one succeeded backup, by
the same worker process, with nothing lost or doubled in the storage.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import redis

from .conftest import ROOT, World, past, small_schemas, wait_until
from .test_chaos import _running_with_bytes

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]

FULL_SECONDS = 8  # several ticks (1 s), reaper runs (2 s) and the big dump's end fall inside it


def _fill(client: redis.Redis) -> None:
    """Every write refused from now on: maxmemory just under what Redis uses, no eviction."""
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", max(1, int(client.info("memory")["used_memory"]) - 64 * 1024))
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("chaos-probe", "x" * 1024)


def _check_backups(world: World) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", "check_backups", "--grace", "0"], cwd=ROOT,
                          env=world.env, capture_output=True, text=True, timeout=60)


def test_a_full_redis_during_a_backup_and_the_ticks_loses_nothing(chaos: World):
    client = redis.Redis.from_url(chaos.broker.url)
    since = chaos.last_record_id()
    beat = chaos.beat("beat")
    worker = chaos.worker("w1")
    big = chaos.make_due(["chaos_big"], past())
    wait_until(lambda: _running_with_bytes(chaos, since, "chaos_big"), "the big dump to be streaming", timeout=60,
               every=0.05)
    _fill(client)  # mid-dump: its progress events, the next step's message and its ack all meet the refusal
    small = chaos.make_due(small_schemas(), past())  # due while Redis is full: beat's ticks cannot send anything
    time.sleep(FULL_SECONDS)

    # still full when the check asks: clients that dropped their connections meanwhile freed their buffers, and
    # on a loaded machine that can bring Redis back under the limit set above
    _fill(client)
    checked = _check_backups(chaos)  # the overdue check, run as cron or a probe runs it: outside Celery
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "OutOfMemoryError" in checked.stdout and "maxmemory" in checked.stdout, checked.stdout
    assert beat.poll() is None, (chaos.logs / "beat.log").read_text()[-3000:]
    assert worker.poll() is None, (chaos.logs / "w1.log").read_text()[-3000:]

    client.config_set("maxmemory", 0)
    freed = time.monotonic()
    chaos.wait_finished(since, 1 + len(small_schemas()), timeout=180)
    chaos.note("Redis full 8 s (mid-dump, 8 ticks) -> every due backup succeeded (after writes were accepted)",
               time.monotonic() - freed)
    assert worker.poll() is None and beat.poll() is None  # the same processes did it: nobody restarted them
    log = (chaos.logs / "w1.log").read_text(errors="replace")
    assert "Unrecoverable error" not in log, log[-3000:]
    assert "OK: no tenant is overdue" in _check_backups(chaos).stdout
    chaos.check_invariants(since=since, slots={"chaos_big": [big], **{s: [small] for s in small_schemas()}})
