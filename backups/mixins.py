"""The module is now `backups.schedule.mixins`: this path is kept for one release, so that
`from backups.mixins import TenantBackupScheduleMixin` still works.
"""

from backups.schedule.mixins import TenantBackupScheduleMixin

__all__ = ["TenantBackupScheduleMixin"]
