"""This project's Celery topology: the backups app's declared queues and routes, as the settings load them."""

from backups.queues import (
           ALL,
           CELERY_QUEUES,
           CELERY_ROUTES,
           DISPATCH,
           DUMP,
           DUMP_PRIORITY,
           HOUSEKEEPING,
           RECORD,
           RESTORE,
)

__all__ = ["ALL", "CELERY_QUEUES", "CELERY_ROUTES", "DISPATCH", "DUMP", "DUMP_PRIORITY", "HOUSEKEEPING", "RECORD",
           "RESTORE"]
