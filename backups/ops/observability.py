"""Logging and error reporting a host project's settings can take whole: `LOGGING = logging_config(...)`,
`sentry_init(dsn=...)`. Imports nothing of Django's app registry, so settings modules may call it."""

from __future__ import annotations

import logging
import re
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(processName)s] %(name)s: %(message)s"
# python-json-logger puts these first and every `extra={...}` field of a call beside them.
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(processName)s %(message)s"
LOG_FORMATS = ("text", "json")
QUIET_LOGGERS = ("httpx", "httpcore", "botocore", "boto3", "s3transfer", "urllib3")
# A signed local download link is a bearer credential (valid up to BACKUPS_URL_MAX_EXPIRY): logs keep its path only.
SIGNED_LINK = re.compile(r"(/local-download/)[^/\s?\"']+")


def redact_signed_links(text: str) -> str:
    """`text` with the signature of every signed local download link replaced by `<redacted>`."""
    return SIGNED_LINK.sub(r"\1<redacted>", text) if "/local-download/" in text else text


class RedactSignedLinks(logging.Filter):
    """Rewrites a log record that names a signed local link (Django's "Not Found: <path>" warnings, a request
    line in an error) so the link's signature never reaches the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_signed_links(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def logging_config(*, log_format: str = "text", level: str = "INFO", backups_level: str | None = None) -> dict:
    """A dictConfig in which every line is printed once, by one handler on the root logger.

    Loggers (`backups`, `django`, Celery's) carry no handler of their own and propagate to it, so nothing is
    printed twice; Django's mail to ADMINS on a server error is kept. `log_format` is `text` (one readable
    line) or `json` (one JSON object a line, with the fields a call passes in `extra`). A Celery worker keeps
    this configuration when `worker_hijack_root_logger` is False.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"LOG_FORMAT must be text or json, not {log_format!r}.")
    formatters: dict[str, dict[str, Any]] = {
        "text": {"format": TEXT_FORMAT},
        "json": {"()": "pythonjsonlogger.json.JsonFormatter", "fmt": JSON_FIELDS,
                 "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger",
                                   "processName": "process"}},
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {log_format: formatters[log_format]},
        "filters": {"require_debug_false": {"()": "django.utils.log.RequireDebugFalse"},
                    "redact_signed_links": {"()": "backups.ops.observability.RedactSignedLinks"}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": log_format, "filters": ["redact_signed_links"]},
            "mail_admins": {"class": "django.utils.log.AdminEmailHandler", "level": "ERROR",
                            "filters": ["require_debug_false"]},
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Django's default config gives `django` a console handler of its own: replaced, or lines go out twice.
            "django": {"handlers": ["mail_admins"], "level": "INFO", "propagate": True},
            # where Django logs a request's path ("Not Found: ..."): redacted before any handler, the mail's too
            **{name: {"filters": ["redact_signed_links"]} for name in ("django.request", "django.server")},
            "backups": {"level": backups_level or level, "propagate": True},
            # HTTP clients of the storage backends log every request at INFO.
            **{name: {"level": "WARNING"} for name in QUIET_LOGGERS},
        },
    }


def sentry_init(*, dsn: str, environment: str = "", release: str = "", traces_sample_rate: float = 0.0) -> bool:
    """Report errors (and, with a sample rate, traces) of Django and Celery to Sentry; nothing without a DSN.

    sentry-sdk is imported only here, so a deployment without SENTRY_DSN never loads it. Log records of
    level ERROR and above become Sentry events (sentry-sdk's logging integration), so a backup marked
    failed, or an alert that could not be sent, reaches Sentry too. Personal data is not sent.
    """
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=dsn, environment=environment or None, release=release or None, traces_sample_rate=traces_sample_rate,
        send_default_pii=False, integrations=[DjangoIntegration(), CeleryIntegration()],
    )
    return True
