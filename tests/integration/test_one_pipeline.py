"""A single backup is the pipeline's batch of one: whoever starts it, its after-success runs in the same process.

Before, run_backup only dumped: moving last_backup_at and retention were later links of a Celery chain
(record_backup, apply_retention), a second code for what a batch did in process.
"""

from __future__ import annotations

from datetime import timedelta

from django.core.management import call_command
from django.utils import timezone
from django_tenants.utils import get_tenant_model

from backups.backup import enqueue
from backups.catalog.records import backup_record_create
from backups.models import BackupEvent, BackupRecord
from backups.tasks import run_backup

from .conftest import DEMO_SCHEMAS


def _old_manual_backups(tenant, days=(40, 41)) -> list[int]:
    """Manual backups older than BACKUPS_MANUAL_RETENTION_DAYS, made for real, then aged."""
    old = []
    for age in days:
        call_command("backup_tenant", tenant.schema_name, "--format", "dump", "--no-progress")
        made = BackupRecord.objects.filter(tenant=tenant).order_by("-pk").first()
        BackupRecord.objects.filter(pk=made.pk).update(created_at=timezone.now() - timedelta(days=age))
        old.append(made.pk)
    return old


def test_run_backup_alone_moves_last_backup_at_and_applies_retention(settings):
    settings.BACKUPS_MANUAL_RETENTION_DAYS = 30
    tenant = get_tenant_model().objects.get(schema_name=DEMO_SCHEMAS[1])
    old = _old_manual_backups(tenant)
    get_tenant_model().objects.filter(pk=tenant.pk).update(last_backup_at=None)
    record = backup_record_create(schema_name=tenant.schema_name, tenant=tenant, fmt="dump",
                                  backup_type=BackupRecord.Type.AUTOMATIC)
    # the task alone, in this process: no later link of any chain runs
    assert run_backup.apply(args=(record.pk,)).get() == BackupRecord.Status.SUCCEEDED
    record.refresh_from_db()
    tenant.refresh_from_db()
    assert tenant.last_backup_at == record.finished_at
    assert not BackupRecord.objects.filter(pk__in=old).exists()
    assert BackupEvent.objects.filter(action=BackupEvent.Action.RETENTION, actor={"retention": True},
                                      tenant_uid=tenant.tenant_uid).count() >= len(old)


def test_the_message_of_a_single_backup_is_run_backup_alone():
    record = backup_record_create(schema_name=DEMO_SCHEMAS[0], backup_type=BackupRecord.Type.AUTOMATIC)
    message = enqueue.backup_message(record)
    assert message.task == "tasks.backups.run_backup" and message.args == (record.pk,)
    assert not message.options.get("link") and message.options["queue"] == "backups.dump"
    BackupRecord.objects.filter(pk=record.pk).delete()


def test_backup_tenant_moves_last_backup_at_through_the_same_after_success():
    tenant = get_tenant_model().objects.get(schema_name=DEMO_SCHEMAS[2])
    get_tenant_model().objects.filter(pk=tenant.pk).update(last_backup_at=None)
    call_command("backup_tenant", tenant.schema_name, "--no-progress")
    made = BackupRecord.objects.filter(tenant=tenant).order_by("-pk").first()
    tenant.refresh_from_db()
    assert made.status == BackupRecord.Status.SUCCEEDED and tenant.last_backup_at == made.finished_at


def test_every_task_keeps_the_host_apps_task_class_and_runs_in_public():
    """tenant_schemas_celery's signal handlers call the host's task class' methods on every task: a task built on
    another base logged an AttributeError before and after each run."""
    from django.db import connection
    from django_tenants.utils import schema_context

    import backups.tasks  # noqa: F401 - registers them
    from project.celery import app

    ours = {name: task for name, task in app.tasks.items() if name.startswith("tasks.backups.")}
    assert {"tasks.backups.run_backup", "tasks.backups.run_backup_batch", "tasks.backups.restore_backup"} <= set(ours)
    for name, task in ours.items():
        assert isinstance(task, app.Task) and hasattr(task, "get_tenant_databases"), name

    seen = []

    @backups.tasks.public_task(name="tests.one_pipeline.where")
    def where() -> str:
        seen.append(connection.schema_name)
        return connection.schema_name

    with schema_context(DEMO_SCHEMAS[0]):
        assert where.apply().get() == "public" and seen == ["public"]
    assert isinstance(where, app.Task)
