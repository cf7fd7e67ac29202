"""The demo project: django-tenants clinics backed up by the reusable `backups` app."""

from .celery import app as celery_app

__all__ = ("celery_app",)
