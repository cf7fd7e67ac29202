"""Backups through the real broker and a real worker: routing, idempotence on redelivery."""

import pytest
from celery.exceptions import QueueNotFound
from django.db import transaction

from backups.catalog.records import backup_record_create
from backups.models import BackupRecord
from backups.storage import get_storage
from backups.tasks import run_backup
from project.celery import app

from .conftest import DEMO_SCHEMAS, wait_for_record

pytestmark = pytest.mark.worker


def test_every_demo_clinic_is_backed_up_by_the_worker(celery_worker):
    with transaction.atomic():
        records = [backup_record_create(schema_name=s) for s in DEMO_SCHEMAS]
        for r in records:
            transaction.on_commit(lambda pk=r.pk: run_backup.delay(pk))
    done = [wait_for_record(r.pk) for r in records]
    assert [r.status for r in done] == [BackupRecord.Status.SUCCEEDED] * 3, [r.error for r in done]
    assert all(r.task_id for r in done)
    for r in done:
        assert get_storage().stat(r.storage_key).size == r.size


def test_redelivered_run_backup_makes_one_backup(celery_worker):
    record = backup_record_create(schema_name="clinica_demo", fmt="dump")
    run_backup.delay(record.pk)
    run_backup.delay(record.pk)  # the same message delivered twice, to two worker processes at once
    first = wait_for_record(record.pk)
    assert first.status == BackupRecord.Status.SUCCEEDED
    result = run_backup.apply(args=[record.pk])  # and once more after it finished
    assert result.get() == "succeeded"
    final = BackupRecord.objects.get(pk=record.pk)
    assert final.attempts == 1
    assert final.finished_at == first.finished_at
    keys = [o.key for o in get_storage().list("clinica_demo/") if o.key.startswith(record.storage_key)]
    assert sorted(keys) == [record.storage_key, record.storage_key + ".manifest.json"]


def test_tasks_go_to_declared_queues_only():
    route = app.amqp.router.route({}, "tasks.backups.run_backup")
    assert route["queue"].name == "backups.dump"
    assert app.conf.task_create_missing_queues is False
    with pytest.raises(QueueNotFound, match="backups.undeclared"):
        run_backup.apply_async(args=[1], queue="backups.undeclared")


def test_task_reliability_settings():
    assert run_backup.acks_late is True
    assert run_backup.reject_on_worker_lost is True
    assert run_backup.soft_time_limit < run_backup.time_limit
    assert run_backup.time_limit < app.conf.broker_transport_options["visibility_timeout"]
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.task_serializer == "json" and app.conf.accept_content == ["json"]
