"""The module is now `backups.ops.observability`: this path is kept for one release, so that
`backups.observability.logging_config(...)` still works.
"""

from backups.ops.observability import RedactSignedLinks, logging_config, redact_signed_links, sentry_init

__all__ = ["RedactSignedLinks", "logging_config", "redact_signed_links", "sentry_init"]
