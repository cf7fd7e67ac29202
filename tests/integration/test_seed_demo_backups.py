"""seed_demo_backups: five real backups over the last six days, manual and automatic."""

from datetime import timedelta
from io import StringIO

from django.core.management import call_command
from django.utils import timezone

from backups.models import BackupRecord
from backups.storage import get_storage


def test_seed_demo_backups_makes_five_real_backups_over_six_days():
    start = timezone.now()
    last = BackupRecord.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    out = StringIO()
    call_command("seed_demo_backups", "clinica_norte", stdout=out)
    seeded = list(BackupRecord.objects.filter(pk__gt=last, schema_name="clinica_norte"))
    assert len(seeded) == 5 and out.getvalue().count("clinica_norte: ") == 5
    assert {r.backup_type for r in seeded} == {"manual", "automatic"}
    assert {r.format for r in seeded} == {"sql", "dump", "json"}
    assert all(r.status == "succeeded" for r in seeded)
    assert all(start - timedelta(days=7) < r.created_at <= start for r in seeded)
    assert max(r.created_at for r in seeded) - min(r.created_at for r in seeded) >= timedelta(days=5)
    for r in seeded:
        assert get_storage().stat(r.storage_key).size == r.size
        assert r.file_name.split("-clinica_norte-")[1].startswith(f"{r.created_at:%Y-%m-%d-%H}")
