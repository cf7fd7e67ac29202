"""The app's Celery queues and task names: declared queues only (`<domain>.<stage>`), every task routed.

A host project points its Celery settings here (CELERY_TASK_QUEUES = CELERY_QUEUES, CELERY_TASK_ROUTES =
CELERY_ROUTES) and runs workers on ALL. Services send work by task name (celery's `signature`), so they
never import the task module: the tasks import the services, not the other way round.

Task names are wire names, kept from the first releases ("tasks.backups.*") so messages queued before an
upgrade still find their task.
"""

from kombu import Queue

DISPATCH = "backups.dispatch"
DUMP = "backups.dump"
DUMP_PRIORITY = "backups.dump.priority"
RECORD = "backups.record"
HOUSEKEEPING = "backups.housekeeping"
RESTORE = "backups.restore"

ALL = (DISPATCH, DUMP, DUMP_PRIORITY, RECORD, HOUSEKEEPING, RESTORE)

DISPATCH_DUE = "tasks.backups.dispatch_due_backups"
FAN_OUT = "tasks.backups.fan_out_backups"
RUN_BACKUP = "tasks.backups.run_backup"
RUN_BACKUP_BATCH = "tasks.backups.run_backup_batch"
RECORD_BACKUP = "tasks.backups.record_backup"
BACKUP_PUBLIC = "tasks.backups.backup_public_schema"
APPLY_RETENTION = "tasks.backups.apply_retention"
REAP_STUCK = "tasks.backups.reap_stuck_backups"
CHECK_OVERDUE = "tasks.backups.check_overdue_backups"
VERIFY_DRILLS = "tasks.backups.schedule_verify_drills"
RECONCILE = "tasks.backups.reconcile_storage"
RESTORE_BACKUP = "tasks.backups.restore_backup"
EXPIRE_SIDE_COPIES = "tasks.backups.expire_side_copies"

CELERY_QUEUES = tuple(Queue(name, routing_key=name) for name in ALL)

CELERY_ROUTES = {
    DISPATCH_DUE: {"queue": DISPATCH},
    FAN_OUT: {"queue": DISPATCH},
    RUN_BACKUP: {"queue": DUMP},
    RUN_BACKUP_BATCH: {"queue": DUMP},
    RECORD_BACKUP: {"queue": RECORD},
    BACKUP_PUBLIC: {"queue": DUMP},
    APPLY_RETENTION: {"queue": HOUSEKEEPING},
    REAP_STUCK: {"queue": HOUSEKEEPING},
    CHECK_OVERDUE: {"queue": HOUSEKEEPING},
    VERIFY_DRILLS: {"queue": HOUSEKEEPING},
    RECONCILE: {"queue": HOUSEKEEPING},
    RESTORE_BACKUP: {"queue": RESTORE},
    EXPIRE_SIDE_COPIES: {"queue": HOUSEKEEPING},
}


def signature(name: str, *args, **options):
    """An immutable signature of the app's task `name` on the current Celery app, without importing it."""
    from celery import current_app

    return current_app.signature(name, args=args, immutable=True, **options)
