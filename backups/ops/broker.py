"""The Celery broker as ops look at it: where it is, which queues it holds, how deep they are (Redis only)."""

from __future__ import annotations

from urllib.parse import urlsplit

from backups.conf import backups_settings

# kombu's Redis transport keeps a queue's messages of priority p > 0 in the list `<queue>\x06\x16<p>`.
KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)
KOMBU_UNACKED_KEY = "unacked"


def _celery_conf():
    from celery import current_app

    return current_app.conf


def broker_url() -> str:
    """BACKUPS_BROKER_URL, or the Celery app's broker_url."""
    return backups_settings.BACKUPS_BROKER_URL or _celery_conf().broker_url or ""


def is_redis(url: str) -> bool:
    """Whether the URL is a Redis broker (redis://, rediss://, unix socket)."""
    return urlsplit(url).scheme in ("redis", "rediss", "redis+socket")


def key_prefix() -> str:
    """kombu's global_keyprefix from the Celery app's broker_transport_options ('' when none)."""
    return (_celery_conf().broker_transport_options or {}).get("global_keyprefix", "") or ""


def priority_steps() -> tuple[int, ...]:
    """The Redis transport's priority steps (kombu's default unless broker_transport_options says otherwise)."""
    return tuple((_celery_conf().broker_transport_options or {}).get("priority_steps", KOMBU_PRIORITY_STEPS))


def queue_names() -> tuple[str, ...]:
    """BACKUPS_METRICS_QUEUES, or every queue the Celery app declares (task_queues), else its default queue."""
    names = backups_settings.BACKUPS_METRICS_QUEUES or ()
    if names:
        return names
    celery_conf = _celery_conf()
    declared = tuple(q.name for q in (celery_conf.task_queues or ()))
    return declared or (celery_conf.task_default_queue,)


def redis_client(*, timeout: float):
    """A Redis client of the broker that gives up after `timeout` seconds (connect and each command)."""
    import redis

    return redis.Redis.from_url(broker_url(), socket_connect_timeout=timeout, socket_timeout=timeout,
                                retry_on_timeout=False)


def queue_keys(queue: str) -> list[str]:
    """Every Redis list a queue's messages sit in, prefix included."""
    prefix = key_prefix()
    return [prefix + (queue if not step else f"{queue}{KOMBU_PRIORITY_SEP}{step}") for step in priority_steps()]


def queue_depths(client) -> tuple[dict[str, int], int]:
    """Messages waiting per queue (all priorities), and messages delivered to a worker but not acknowledged
    (with acks_late: running or prefetched tasks), in one pipelined round trip."""
    queues = queue_names()
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for key in queue_keys(queue):
            pipe.llen(key)
    pipe.hlen(key_prefix() + KOMBU_UNACKED_KEY)
    replies = pipe.execute()
    steps = len(priority_steps())
    depths = {queue: sum(replies[i * steps:(i + 1) * steps]) for i, queue in enumerate(queues)}
    return depths, int(replies[-1])


WRITE_PROBE_KEY = "_tenant_backups.write_probe"  # also written by backups.ops.redis_transport's channels


def ping(*, timeout: float) -> None:
    """Raise when the broker does not answer within `timeout` seconds, or (Redis) refuses writes: a Redis at
    maxmemory answers PING but refuses the writes every message needs (OutOfMemoryError names it)."""
    url = broker_url()
    if not url:
        raise RuntimeError("no broker configured")
    if is_redis(url):
        client = redis_client(timeout=timeout)
        try:
            client.ping()
            client.set(key_prefix() + WRITE_PROBE_KEY, "1", ex=60)
        finally:
            client.close()
        return
    from kombu import Connection

    with Connection(url, connect_timeout=timeout) as connection:
        connection.ensure_connection(max_retries=1, timeout=timeout)
