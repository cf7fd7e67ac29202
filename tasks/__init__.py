"""This project's Celery layer: its queue topology (tasks.queues). The tasks themselves are the backups app's
(backups.tasks), registered by the standard `app.autodiscover_tasks()` in project/celery.py."""
