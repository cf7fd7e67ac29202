"""A Redis at maxmemory (noeviction) refuses writes: the worker survives it and resumes when Redis accepts again.

kombu takes a message with BRPOP (allowed when Redis is full) and then records it in the unacked index (ZADD,
refused): kombu's transport raised that as a channel error and the worker's main process exited for good. The
message taken is lost with Redis's refusal; its record is still `queued`, and the reaper sends it again.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis

from backups.catalog.records import backup_record_create
from backups.housekeeping.reaper import reap_stuck_backups
from backups.models import BackupRecord

from .conftest import wait_for_record
from .test_broker_restart import private_broker_worker, send_backup, wait_for


def _fill(client: redis.Redis) -> None:
    """Make every write fail: maxmemory just under what Redis uses, no eviction."""
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", max(1, int(client.info("memory")["used_memory"]) - 4096))
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("tb-probe", "x" * 1024)


@pytest.mark.timeout(300)
def test_the_worker_survives_a_full_redis_and_resumes(settings, celery_worker):
    settings.BACKUPS_LOST_MESSAGE_SECONDS = 0
    with private_broker_worker("broker-full") as (server, proc, log):
        client = redis.Redis.from_url(server.url)
        record = backup_record_create(schema_name="clinica_sonrisa", fmt="sql")
        os.kill(proc.pid, signal.SIGSTOP)  # its BRPOP is already waiting: Redis hands it the message meanwhile
        try:
            send_backup(server.url, record)
            wait_for(lambda: client.llen(_queue_key(client)) == 0, "Redis to hand the message to the waiting BRPOP")
            _fill(client)
        finally:
            os.kill(proc.pid, signal.SIGCONT)  # the worker now records the message as unacked: refused
        wait_for(lambda: "used memory > 'maxmemory'" in log.read_text() or proc.poll() is not None,
                 "the worker to meet the full Redis")
        time.sleep(5)  # several reconnection attempts against the full Redis
        assert proc.poll() is None, f"the worker exited: {log.read_text()[-3000:]}"
        assert "Redis refuses writes" in log.read_text()  # the log says what is wrong
        client.config_set("maxmemory", 0)
        after = backup_record_create(schema_name="clinica_norte", fmt="sql")
        send_backup(server.url, after)  # the same worker consumes again
        assert wait_for_record(after.pk, timeout=120).status == BackupRecord.Status.SUCCEEDED
        assert proc.poll() is None and "Unrecoverable error" not in log.read_text()
        assert BackupRecord.objects.get(pk=record.pk).status == BackupRecord.Status.QUEUED
        reaped = reap_stuck_backups(broker_url=server.url)  # the message Redis refused to keep is sent again
        assert record.pk in reaped.requeued, reaped
        assert wait_for_record(record.pk, timeout=120).status == BackupRecord.Status.SUCCEEDED


def _queue_key(client: redis.Redis) -> str:
    keys = [k.decode() for k in client.keys("*backups.dump.priority*") if "_kombu" not in k.decode()]
    return keys[0] if keys else "none"


def test_the_overdue_check_names_a_broker_that_refuses_writes(settings, fake_tenants, mailoutbox):
    """Beat's ticks fail with a log line only when Redis is full: the tenants falling behind are what ops see,
    so the overdue check (mail, log, `check_backups`) says why."""
    from datetime import timedelta
    from io import StringIO

    from django.core.management import call_command
    from django.utils import timezone
    from django_tenants.utils import get_tenant_model

    from backups.catalog.selectors import overdue_tenants
    from backups.ops.overdue import likely_cause, overdue_check
    from tests.servers.redis_server import RedisServer

    settings.ADMINS = [("Ops", "ops@example.com")]
    settings.BACKUPS_OVERDUE_GRACE_SECONDS = 60
    [tenant] = fake_tenants("full_", 1, due_at=timezone.now() + timedelta(hours=1))
    get_tenant_model().objects.filter(pk=tenant.pk).update(next_backup_at=timezone.now() - timedelta(hours=1))
    server = RedisServer.start()
    try:
        settings.BACKUPS_BROKER_URL = server.url
        assert likely_cause(overdue_tenants()) == ""  # a broker that takes writes is not blamed
        _fill(redis.Redis.from_url(server.url))
        found = overdue_check()
        assert "refuses writes (OutOfMemoryError" in found.cause and "maxmemory" in found.cause
        assert "Likely cause: the broker refuses writes" in mailoutbox[-1].body
        out = StringIO()
        with pytest.raises(SystemExit):
            call_command("check_backups", stdout=out)
        assert "Likely cause: the broker refuses writes (OutOfMemoryError" in out.getvalue()
    finally:
        server.stop()
