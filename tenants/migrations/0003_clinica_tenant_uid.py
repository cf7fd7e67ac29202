"""Give every tenant its never-reused backup identity (nullable first, filled row by row, then unique)."""

import uuid

from django.db import migrations, models


def fill(apps, schema_editor):
    Clinica = apps.get_model("tenants", "Clinica")
    for pk in Clinica.objects.filter(tenant_uid__isnull=True).values_list("pk", flat=True):
        Clinica.objects.filter(pk=pk).update(tenant_uid=uuid.uuid4())


class Migration(migrations.Migration):

    dependencies = [("tenants", "0002_clinica_backup_overdue_since")]
    run_before = [("backups", "0004_tenant_identity")]

    operations = [
        migrations.AddField(
            model_name="clinica", name="tenant_uid",
            field=models.UUIDField(editable=False, null=True, verbose_name="backup identity"),
        ),
        migrations.RunPython(fill, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="clinica", name="tenant_uid",
            field=models.UUIDField(
                default=uuid.uuid4, editable=False, unique=True, verbose_name="backup identity",
                help_text="Never reused: every backup, event, restore job, link and token is bound to it, so a "
                          "later tenant given the same schema name sees nothing of this one's."),
        ),
    ]
