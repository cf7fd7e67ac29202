"""kombu's Redis transport, fixed so a worker survives a Redis restart while it runs a late-acked task.

With kombu 5.7.0 (the newest release; celery 5.7.0, redis-py 8.1.0) a worker whose connection to Redis
drops while it holds an unacknowledged message (every running `acks_late` task) exits for good with
``CRITICAL Unrecoverable error: AttributeError("'NoneType' object has no attribute 'hostname'")``:

1. the consumer's ``on_connection_error_after_connected`` calls ``connection.collect()``, which closes
   the default channel: ``Channel.close()`` first drains the pending BRPOP (``_brpop_read``), which raises
   a ConnectionError because Redis is gone. ``close`` catches only ``Empty`` there, so it stops before
   marking the channel closed or restoring the unacked messages; ``maybe_close_channel`` swallows the
   ConnectionError and ``collect`` then detaches the transport (``transport.client = None``);
2. celery then calls ``connection.close()``, which closes the same, still open, channel again: this time
   it restores the unacked message, builds a new pool from ``self.connection.client`` (now None) and
   raises AttributeError, which is not a connection error, so ``ignore_errors`` lets it through and the
   worker's blueprint stops. An idle worker holds no unacked message, so it skips the restore and lives.

This channel finishes ``close`` whatever the BRPOP drain raises, and turns "this channel's transport is
gone" into a ConnectionError (which kombu and celery handle: a late ack of the old channel is logged as
"Couldn't ack" and the message comes back after the visibility timeout, where the record's lock makes it
a no-op). Selected with ``CELERY_BROKER_TRANSPORT = "backups.ops.redis_transport:Transport"`` (project/settings.py).

A Redis at ``maxmemory`` with ``noeviction`` (or a replica turned read-only by a failover) refuses writes: the
BRPOP that takes a message succeeds, the ZADD that records it as unacknowledged fails with OutOfMemoryError, a
ResponseError that kombu counts as a channel error, so the worker's main process exited ("Unrecoverable error").
This transport counts refused writes as connection errors, which celery answers by reconnecting with backoff; and
a new channel probes with a small write, so the reconnection waits (celery's "Trying again in N seconds") until
Redis accepts writes again instead of failing on its first queue binding. The message Redis refused to keep is
gone from Redis; its record is still `queued`, and the reaper sends it again.
"""

from __future__ import annotations

from queue import Empty

from kombu.transport import redis as kombu_redis

from backups.ops.broker import WRITE_PROBE_KEY

_REFUSED_WRITES = (kombu_redis.redis.exceptions.OutOfMemoryError, kombu_redis.redis.exceptions.ReadOnlyError)


class Channel(kombu_redis.Channel):
    """A Redis channel whose close always completes, never dereferences a detached transport, and is not made
    while Redis refuses writes."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        try:
            self.client.set(self.global_keyprefix + WRITE_PROBE_KEY, "1", ex=60)
        except _REFUSED_WRITES as exc:
            self.connection.cycle.discard(self)
            self._registered = False
            self._disconnect_pools()
            raise kombu_redis.redis.exceptions.ConnectionError(
                f"Redis refuses writes ({exc}): it is at maxmemory (set maxmemory-policy noeviction and give it "
                "more memory) or read-only; waiting for it to accept writes again.") from exc

    def close(self) -> None:
        """Drain a pending BRPOP, ignoring a dead connection, then close as kombu does."""
        if self._in_poll and not self.closed:
            try:
                self._brpop_read()
            except (Empty, *self.connection_errors):
                pass  # the socket is gone: nothing to drain; go on and close the channel
        super().close()

    def _connparams(self, asynchronous: bool = False) -> dict:
        """Raise a connection error (not AttributeError) when the channel outlived its connection."""
        if self.connection is None or self.connection.client is None:
            raise kombu_redis.redis.exceptions.ConnectionError(
                "This broker channel belongs to a connection that was closed after a connection loss.")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with the channel above; a Redis refusing writes is a connection error."""

    Channel = Channel
    # read from the class by kombu's Connection (and so by celery's consumer), not from an instance
    connection_errors = (*kombu_redis.Transport.connection_errors, *_REFUSED_WRITES)
