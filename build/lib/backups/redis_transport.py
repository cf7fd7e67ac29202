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
a no-op). Selected with ``CELERY_BROKER_TRANSPORT = "backups.redis_transport:Transport"`` (project/settings.py).
"""

from __future__ import annotations

from queue import Empty

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    """A Redis channel whose close always completes, and that never dereferences a detached transport."""

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
    """kombu's Redis transport with the channel above."""

    Channel = Channel
