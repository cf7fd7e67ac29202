"""Declared queues, named `<domain>.<stage>`; routing refuses any other name."""

from kombu import Queue

DISPATCH = "backups.dispatch"
DUMP = "backups.dump"
DUMP_PRIORITY = "backups.dump.priority"
RECORD = "backups.record"
HOUSEKEEPING = "backups.housekeeping"
RESTORE = "backups.restore"

ALL = (DISPATCH, DUMP, DUMP_PRIORITY, RECORD, HOUSEKEEPING, RESTORE)

CELERY_QUEUES = tuple(Queue(name, routing_key=name) for name in ALL)

CELERY_ROUTES = {
    "tasks.backups.dispatch_due_backups": {"queue": DISPATCH},
    "tasks.backups.fan_out_backups": {"queue": DISPATCH},
    "tasks.backups.run_backup": {"queue": DUMP},
    "tasks.backups.run_backup_batch": {"queue": DUMP},
    "tasks.backups.record_backup": {"queue": RECORD},
    "tasks.backups.apply_retention": {"queue": HOUSEKEEPING},
    "tasks.backups.reap_stuck_backups": {"queue": HOUSEKEEPING},
    "tasks.backups.check_overdue_backups": {"queue": HOUSEKEEPING},
    "tasks.backups.schedule_verify_drills": {"queue": HOUSEKEEPING},
    "tasks.backups.reconcile_storage": {"queue": HOUSEKEEPING},
    "tasks.backups.restore_backup": {"queue": RESTORE},
}
