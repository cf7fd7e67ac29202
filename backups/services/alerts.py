"""Telling ops: a mail to the project's ADMINS that never stops the caller when the mail server is down."""

from __future__ import annotations

import logging

from django.core.mail import mail_admins

logger = logging.getLogger(__name__)


def alert_ops(subject: str, body: str) -> bool:
    """Mail ADMINS (nothing is sent when none are set); False, with the error logged, when sending failed."""
    try:
        mail_admins(subject, body, fail_silently=False)
    except Exception:  # a mail outage must not stop a check or a restore job; the caller decides what to retry
        logger.exception("could not mail ADMINS: %s", subject)
        return False
    return True
