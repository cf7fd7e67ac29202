"""The module is now `backups.ops.redis_transport`: this path is kept for one release, so that
`CELERY_BROKER_TRANSPORT = "backups.redis_transport:Transport"` still works.
"""

from backups.ops.redis_transport import Channel, Transport

__all__ = ["Channel", "Transport"]
