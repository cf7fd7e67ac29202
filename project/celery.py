"""The Celery app: configuration lives in Django settings (namespace CELERY)."""

import os

from tenant_schemas_celery.app import CeleryApp

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = CeleryApp("project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()  # the standard discovery: backups.tasks of the installed app
