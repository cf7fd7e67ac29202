"""`manage.py clone_tenant <record_id> <new_schema> --domain <domain>`: a new tenant from a backup (see
backups.management.commands.clone_tenant); here so that it wins over django-tenants' command of that name."""

from backups.management.commands.clone_tenant import Command

__all__ = ["Command"]
