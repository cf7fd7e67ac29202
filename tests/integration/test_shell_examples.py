"""The source documents' shell examples, run literally in `manage.py shell -c`, then the cron command they lead to."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_tenants.utils import get_tenant_model

from backups.catalog.finalize import backup_record_delete
from backups.models import BackupRecord

SCHEMA = "clinica_norte"

SET_A_DAILY_TIME = """
from tenants.models import Clinica
clinica = Clinica.objects.get(schema_name='clinica_norte')
clinica.backup_schedule = '{schedule}'
clinica.backup_weekday = 6
clinica.backup_day_of_month = 1
clinica.backup_time = '02:00:00'
clinica.save()
print(clinica.next_backup_at)
"""

SCHEDULE_ONCE = """
from datetime import timedelta
from django.utils import timezone
from tenants.models import Clinica
clinica = Clinica.objects.get(schema_name='clinica_norte')
clinica.backup_schedule = 'scheduled'
clinica.next_scheduled_backup = timezone.now() - timedelta(minutes=5)
clinica.save()
"""


@pytest.fixture
def norte() -> Iterator:
    """clinica_norte, its schedule off again afterwards and the backups the test made gone."""
    Tenant = get_tenant_model()
    last = BackupRecord.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    zone = Tenant.objects.get(schema_name=SCHEMA).backup_timezone
    Tenant.objects.filter(schema_name=SCHEMA).update(backup_timezone="UTC")  # another test may have left its own
    yield Tenant.objects.get(schema_name=SCHEMA)
    Tenant.objects.filter(schema_name=SCHEMA).update(backup_schedule="disabled", next_backup_at=None,
                                                     next_scheduled_backup=None, backup_time=None,
                                                     backup_timezone=zone)
    for record in BackupRecord.objects.filter(pk__gt=last, schema_name=SCHEMA):
        backup_record_delete(record=record)


def _shell(script: str) -> str:
    out = StringIO()
    call_command("shell", command=script, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize("schedule", ["daily", "every_12h", "every_6h", "weekly", "monthly"])
def test_a_string_backup_time_sets_the_next_backup(norte, schedule, settings):
    settings.BACKUPS_SPREAD_SECONDS = 0
    _shell(SET_A_DAILY_TIME.format(schedule=schedule))
    norte.refresh_from_db()
    assert norte.backup_time == datetime.time(2, 0)
    assert norte.next_backup_at > timezone.now()
    assert norte.next_backup_at.astimezone(datetime.UTC).time() in (
        datetime.time(2, 0), datetime.time(8, 0), datetime.time(14, 0), datetime.time(20, 0))  # the tenant's zone: UTC


def test_a_one_off_backup_in_the_past_runs_at_the_next_tick_named_by_name_and_schema(norte, settings):
    settings.BACKUPS_SPREAD_SECONDS = 0
    _shell(SCHEDULE_ONCE)
    norte.refresh_from_db()
    assert norte.next_backup_at is not None and norte.next_backup_at <= timezone.now()

    out = StringIO()
    call_command("run_scheduled_backups", stdout=out)
    text = out.getvalue()
    label = f"{norte.nombre} (clinica_norte)"
    assert f"Starting backup for {label}..." in text, text
    assert f"  {label}: Uploaded " in text, text
    norte.refresh_from_db()
    assert norte.backup_schedule == "disabled" and norte.next_backup_at is None  # it ran once
    assert BackupRecord.objects.filter(schema_name=SCHEMA, backup_type="automatic",
                                       status="succeeded").order_by("-pk").first().slot is not None
