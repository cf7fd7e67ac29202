"""Telling ops: a mail to the project's ADMINS and a post to a chat webhook, neither ever stopping the caller."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import mail_admins

from backups.conf import backups_settings

logger = logging.getLogger(__name__)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: urllib would resend the alert as a GET to wherever Location points (any host)
    and call the answer there a delivery. A 3xx is an HTTPError the caller logs as not delivered."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201 - urllib's signature
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def alert_ops(subject: str, body: str) -> bool:
    """Mail ADMINS and post to BACKUPS_ALERT_WEBHOOK_URL, each when configured.

    True when ops were told: by at least one configured channel, or none is configured (the caller's own
    log lines are all there is). False, with every error logged, when every configured channel failed, so a
    caller that retries (the overdue check) tries again and one dead channel does not repeat the other's mail.
    """
    results = []
    if settings.ADMINS:
        results.append(_mail(subject, body))
    if backups_settings.BACKUPS_ALERT_WEBHOOK_URL:
        results.append(alert_webhook(subject, body))
    return any(results) or not results


def _mail(subject: str, body: str) -> bool:
    try:
        mail_admins(subject, body, fail_silently=False)
    except Exception:  # a mail outage must not stop a check or a restore job; the caller decides what to retry
        logger.exception("could not mail ADMINS: %s", subject)
        return False
    return True


def alert_webhook(subject: str, body: str, *, url: str | None = None, timeout: float | None = None) -> bool:
    """POST `{"text": "<subject>\\n<body>"}` (the Slack incoming-webhook shape; Mattermost, Rocket.Chat, Teams'
    workflows and most chat tools take it) to the webhook; False, logged, on any error or a non-2xx answer.

    The URL is a secret (the token is in it): only its host is ever logged.
    """
    url = url or backups_settings.BACKUPS_ALERT_WEBHOOK_URL
    timeout = float(backups_settings.BACKUPS_ALERT_WEBHOOK_TIMEOUT_SECONDS if timeout is None else timeout)
    host = urlsplit(url).hostname or "?"
    if urlsplit(url).scheme not in ("http", "https"):
        logger.error("alert webhook not sent (BACKUPS_ALERT_WEBHOOK_URL is not an http(s) URL): %s", subject)
        return False
    data = json.dumps({"text": f"{subject}\n{body}"}).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "tenant-backups-alerts"})
    try:
        with _OPENER.open(request, timeout=timeout) as response:  # http(s) checked above
            response.read(1024)
            status = response.status
    except urllib.error.HTTPError as exc:
        moved = " (a redirect, not followed: set the webhook's final URL)" if 300 <= exc.code < 400 else ""
        logger.error("alert webhook at %s answered %s%s: %s", host, exc.code, moved, subject)
        return False
    except Exception as exc:  # timeouts, refused, DNS, TLS: logged, never raised into the caller
        logger.error("alert webhook at %s failed (%s: %s): %s", host, type(exc).__name__, exc, subject)
        return False
    if not 200 <= status < 300:
        logger.error("alert webhook at %s answered %s: %s", host, status, subject)
        return False
    return True
