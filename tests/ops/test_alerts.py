"""Alerts go to ADMINS and to a Slack-compatible webhook; a dead channel is logged, never raised."""

from __future__ import annotations

import json
import logging
import time

import pytest
from django.core import mail

from backups.catalog.alerts import alert_ops, alert_webhook
from backups.catalog.records import backup_record_create, backup_record_mark_damaged

from .helpers import closed_port

SECRET_PATH = "/services/T000/B000/very-secret-token"


@pytest.fixture
def webhook(settings, http_server):
    """The alert webhook is the loopback server; no ADMINS unless a test sets them."""
    url, received = http_server
    settings.BACKUPS_ALERT_WEBHOOK_URL = url + SECRET_PATH
    settings.ADMINS = []
    return received


def test_an_alert_is_posted_as_slack_json(webhook):
    assert alert_ops("2 tenant(s) overdue for backup", "clinica_demo: late\nclinica_norte: failed") is True
    [request] = webhook.requests
    assert request["path"] == SECRET_PATH
    assert request["headers"]["Content-Type"] == "application/json"
    assert json.loads(request["body"]) == {
        "text": "2 tenant(s) overdue for backup\nclinica_demo: late\nclinica_norte: failed"}


def test_mail_and_webhook_both_carry_the_alert(webhook, settings):
    settings.ADMINS = [("Ops", "ops@example.com")]
    mail.outbox.clear()
    assert alert_ops("Verify drill failed for clinica_demo", "row counts differ") is True
    assert len(mail.outbox) == 1 and "Verify drill failed" in mail.outbox[0].subject
    assert len(webhook.requests) == 1


def test_a_damaged_backup_reaches_the_webhook(webhook, cleanup):
    record = backup_record_create(schema_name="clinica_demo")
    backup_record_mark_damaged(record=record, error="SHA-256 differs")
    [request] = webhook.requests
    text = json.loads(request["body"])["text"]
    assert record.file_name in text and "damaged" in text and "SHA-256 differs" in text


def test_a_webhook_that_answers_an_error_is_logged_without_its_secret(webhook, caplog):
    webhook.status = 500
    with caplog.at_level(logging.ERROR, logger="backups.catalog.alerts"):
        assert alert_webhook("subject 500", "body") is False
        assert alert_ops("subject 500", "body") is False  # the only channel failed: the caller may retry
    assert "answered 500" in caplog.text and "127.0.0.1" in caplog.text and "subject 500" in caplog.text
    assert "very-secret-token" not in caplog.text


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirected_webhook_is_not_followed_nor_counted_as_delivered(webhook, caplog, status):
    webhook.status, webhook.location = status, "/elsewhere"  # on the same server: a follow-up would be recorded
    with caplog.at_level(logging.ERROR, logger="backups.catalog.alerts"):
        assert alert_webhook("subject redirected", "body") is False
    assert [r["path"] for r in webhook.requests] == [SECRET_PATH]
    assert f"answered {status}" in caplog.text and "redirect" in caplog.text
    assert "very-secret-token" not in caplog.text and "/elsewhere" not in caplog.text


def test_a_failed_webhook_beside_a_delivered_mail_still_told_ops(webhook, settings, caplog):
    webhook.status = 404
    settings.ADMINS = [("Ops", "ops@example.com")]
    mail.outbox.clear()
    with caplog.at_level(logging.ERROR, logger="backups.catalog.alerts"):
        assert alert_ops("subject", "body") is True
    assert len(mail.outbox) == 1 and "answered 404" in caplog.text


def test_a_slow_webhook_is_given_up_after_its_timeout(webhook, settings, caplog):
    webhook.delay = 3.0
    settings.BACKUPS_ALERT_WEBHOOK_TIMEOUT_SECONDS = 0.3
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="backups.catalog.alerts"):
        assert alert_ops("slow", "body") is False
    assert time.monotonic() - started < 2.0
    assert "failed" in caplog.text and "timed out" in caplog.text.lower()


def test_a_refused_webhook_never_raises(settings, caplog):
    settings.ADMINS = []
    with closed_port() as port, caplog.at_level(logging.ERROR, logger="backups.catalog.alerts"):
        settings.BACKUPS_ALERT_WEBHOOK_URL = f"http://127.0.0.1:{port}/hook"
        assert alert_ops("refused", "body") is False
    assert "refused" in caplog.text.lower()


def test_a_webhook_url_that_is_not_http_is_refused(settings, caplog):
    settings.ADMINS = []
    settings.BACKUPS_ALERT_WEBHOOK_URL = "file:///etc/passwd"
    with caplog.at_level(logging.ERROR, logger="backups.catalog.alerts"):
        assert alert_ops("subject", "body") is False
    assert "not an http(s) URL" in caplog.text


def test_without_any_channel_an_alert_is_only_the_callers_log(settings):
    settings.ADMINS = []
    settings.BACKUPS_ALERT_WEBHOOK_URL = ""
    mail.outbox.clear()
    assert alert_ops("subject", "body") is True
    assert mail.outbox == []
