"""Bind every record, event and restore job to the tenant's never-reused identity (tenant_uid).

Rows whose tenant still exists take its tenant_uid. Rows whose tenant is gone (the foreign key was set
to NULL) get one fresh identity per schema name: it belongs to no tenant, so a later tenant with the same
schema name can never see them. The tenant model's own tenant_uid migration must run first: a host
project marks it with `run_before = [("backups", "0004_tenant_identity")]`.
"""

import uuid

from django.conf import settings
from django.db import migrations, models


def fill(apps, schema_editor):
    Tenant = apps.get_model(settings.TENANT_MODEL)
    uids = dict(Tenant.objects.values_list("pk", "tenant_uid"))
    orphans: dict[str, uuid.UUID] = {}
    deleted_at = {}
    for model_name in ("BackupRecord", "BackupEvent", "RestoreJob"):
        Model = apps.get_model("backups", model_name)
        for pk, tenant_id, schema, created in Model.objects.values_list("pk", "tenant_id", "schema_name",
                                                                       "created_at"):
            uid = uids.get(tenant_id) or orphans.setdefault(schema, uuid.uuid4())
            Model.objects.filter(pk=pk).update(tenant_uid=uid)
            if tenant_id is None and model_name == "BackupRecord":
                deleted_at[schema] = max(deleted_at.get(schema, created), created)
    Record = apps.get_model("backups", "BackupRecord")
    for schema, when in deleted_at.items():  # the newest record is the best guess of when the tenant went
        Record.objects.filter(tenant__isnull=True, schema_name=schema).update(tenant_deleted_at=when)


class Migration(migrations.Migration):

    dependencies = [
        ("backups", "0003_restorejob"),
        migrations.swappable_dependency(settings.TENANT_MODEL),
    ]

    operations = [
        migrations.AddField("backuprecord", "tenant_uid", models.UUIDField(null=True, verbose_name="tenant identity")),
        migrations.AddField("backupevent", "tenant_uid", models.UUIDField(null=True, verbose_name="tenant identity")),
        migrations.AddField("restorejob", "tenant_uid", models.UUIDField(null=True, verbose_name="tenant identity")),
        migrations.AddField("backuprecord", "tenant_deleted_at",
                            models.DateTimeField(null=True, blank=True, verbose_name="tenant deleted at")),
        migrations.AddField("backuprecord", "damaged_at",
                            models.DateTimeField(null=True, blank=True, verbose_name="damaged at")),
        migrations.RunPython(fill, migrations.RunPython.noop),
    ]
