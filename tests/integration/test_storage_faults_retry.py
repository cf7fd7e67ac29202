"""The transient-retry window bounds the whole time, the tries included, not only the waits (issue 22, part 4)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from backups.catalog.faults import backup_next_retry, retry_delays
from backups.catalog.records import backup_record_create
from backups.models import BackupRecord


@pytest.fixture
def automatic(settings):
    """An automatic record, running; waits of 60 s doubling up to 900 s within a 2 h window."""
    settings.BACKUPS_TASK_RETRY_DELAY = 60
    settings.BACKUPS_TASK_RETRY_MAX_DELAY = 900
    settings.BACKUPS_TRANSIENT_RETRY_WINDOW_SECONDS = 7200
    record = backup_record_create(schema_name="clinica_demo", fmt="sql", backup_type="automatic")
    yield record
    record.delete()


def _age(record: BackupRecord, *, created: float, started: float) -> None:
    """As if the record was created `created` s ago and its current try started `started` s ago."""
    now = timezone.now()
    BackupRecord.objects.filter(pk=record.pk).update(status=BackupRecord.Status.RUNNING,
                                                     created_at=now - timedelta(seconds=created),
                                                     started_at=now - timedelta(seconds=started))


def test_slow_tries_end_the_retries_within_the_window(automatic):
    """At 1 KB/s each try takes long: the waits alone (60 s, 120 s) fit, but the tries do not."""
    assert sum(retry_delays(automatic)[:3]) < 7200
    _age(automatic, created=2400 + 5, started=2400)  # the first try failed after 40 min: a second one fits
    assert backup_next_retry(record_id=automatic.pk, retries=0, error="connection reset") == 60
    _age(automatic, created=2 * 2400 + 60 + 5, started=2400)  # the second one failed after 40 min too
    assert backup_next_retry(record_id=automatic.pk, retries=1, error="connection reset") is None
    automatic.refresh_from_db()
    assert automatic.status == BackupRecord.Status.FAILED
    assert automatic.error.startswith("Gave up after 2 tries over 4865 s: connection reset")


def test_no_try_is_sent_that_would_end_past_the_window(automatic):
    _age(automatic, created=7000, started=10)  # waited in the queue and retried for almost two hours
    assert backup_next_retry(record_id=automatic.pk, retries=4, error="storage 503") is None
    automatic.refresh_from_db()
    assert automatic.status == BackupRecord.Status.FAILED and "over 7000 s" in automatic.error
