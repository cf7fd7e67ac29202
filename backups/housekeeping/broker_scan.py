"""Which backup records (and restore jobs) have a task message in the broker: waiting in a queue, or taken by a
worker and unacked.

The reaper asks this before resending a `queued` record, so a message lost by a diskless Redis restart is
sent again within the reaper's period, while a record that is merely waiting in a long queue is left alone
(resending it would flood that queue). Only Redis can be read this way; for other brokers this says None
and the reaper falls back to BACKUPS_QUEUED_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Collection, Iterable

import redis

from backups.queues import FAN_OUT, RESTORE, RESTORE_BACKUP, RUN_BACKUP, RUN_BACKUP_BATCH

logger = logging.getLogger(__name__)
# every message the product sends that carries backup records (backups.queues): one record (run_backup, a chain's
# first link or a retry), or a list of them (fan_out_backups, run_backup_batch)
BACKUP_TASKS = (RUN_BACKUP, FAN_OUT, RUN_BACKUP_BATCH)
MANY_RECORDS = (FAN_OUT, RUN_BACKUP_BATCH)
BATCH = 500


def _ids_in(task: str | None, args, kwargs) -> list[int]:
    """The record (or restore job) ids a task's arguments name."""
    args = list(args or []) if isinstance(args, (list, tuple)) else []
    kwargs = kwargs if isinstance(kwargs, dict) else {}
    if task in MANY_RECORDS:
        ids = kwargs.get("record_ids") or (args[0] if args else [])
        return [i for i in ids if isinstance(i, int)] if isinstance(ids, (list, tuple)) else []
    value = args[0] if args else kwargs.get("job_id" if task == RESTORE_BACKUP else "record_id")
    return [value] if isinstance(value, int) else []


def _record_ids_of(raw: bytes | str, tasks: Collection[str] = BACKUP_TASKS) -> Iterable[int]:
    """Ids a message of one of `tasks` names: run_backup's record, fan_out_backups' and run_backup_batch's records,
    restore_backup's job."""
    try:
        message = json.loads(raw)
        task = (message.get("headers") or {}).get("task")
        if task not in tasks:
            return ()
        body = message.get("body", "")
        if (message.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, _ = json.loads(body)
    except (ValueError, TypeError, KeyError, AttributeError):
        return ()
    return _ids_in(task, args, kwargs)


def record_ids_in_broker(queues: Iterable[str], *, url: str | None = None,
                         tasks: Collection[str] = BACKUP_TASKS) -> set[int] | None:
    """Ids of records with a message waiting in `queues` or held by a live worker; None if unreadable."""
    found = record_ids_in_queues(queues, url=url, tasks=tasks)
    if found is None:
        return None
    waiting, unacked = found
    if unacked - waiting:
        unacked &= record_ids_held_by_live_workers(url=url, tasks=tasks)
    return waiting | unacked


def restore_job_ids_in_broker(*, url: str | None = None) -> set[int] | None:
    """Ids of restore jobs with a restore_backup message waiting or held by a live worker; None if unreadable."""
    return record_ids_in_broker((RESTORE,), url=url, tasks=(RESTORE_BACKUP,))


def record_ids_held_by_live_workers(*, url: str | None = None, tasks: Collection[str] = BACKUP_TASKS) -> set[int]:
    """Ids of records (or jobs) whose task a live worker has reserved, scheduled (a retry's countdown) or runs.

    A message in the unacked index whose worker died stays there until the visibility timeout (hours):
    asking the workers tells it from one waiting behind a long dump.
    """
    from celery import current_app

    held: set[int] = set()
    with current_app.connection_for_read(url) as conn:
        inspect = current_app.control.inspect(timeout=2.0, connection=conn)
        for reply in (inspect.reserved(), inspect.scheduled(), inspect.active()):
            for worker_tasks in (reply or {}).values():
                for task in worker_tasks or ():
                    request = task.get("request", task)
                    # a fan_out_backups message only sends chains; its records are not being run
                    if request.get("name") in tasks and request.get("name") != FAN_OUT:
                        held.update(_ids_in(request.get("name"), request.get("args"), request.get("kwargs")))
    return held


def record_ids_in_queues(queues: Iterable[str], *, url: str | None = None,
                         tasks: Collection[str] = BACKUP_TASKS) -> tuple[set[int], set[int]] | None:
    """(ids with a message waiting in `queues`, at every priority; ids in the unacked index); None if unreadable."""
    from celery import current_app

    with current_app.connection_for_read(url) as conn:
        if "redis" not in type(conn.transport).__module__ and conn.transport.driver_type != "redis":
            return None
        try:
            channel = conn.default_channel
            client = redis.Redis(connection_pool=channel.pool)  # kombu's client prefixes only some commands
            prefix = getattr(channel, "global_keyprefix", "") or ""
            found: set[int] = set()
            unacked: set[int] = set()
            for queue in queues:
                for priority in channel.priority_steps:
                    name = prefix + channel._q_for_pri(queue, priority)
                    length = client.llen(name)
                    for start in range(0, length, BATCH):
                        for raw in client.lrange(name, start, start + BATCH - 1):
                            found.update(_record_ids_of(raw, tasks))
            for _, value in client.hscan_iter(prefix + channel.unacked_key, count=BATCH):
                try:
                    raw = json.loads(value)[0]
                except (ValueError, IndexError, TypeError):
                    continue
                unacked.update(_record_ids_of(json.dumps(raw) if isinstance(raw, dict) else raw, tasks))
            return found, unacked
        except conn.connection_errors + conn.channel_errors as exc:
            logger.warning("could not read the broker's queues (%s); lost messages are not looked for", exc)
            return None
