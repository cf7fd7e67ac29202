"""Fill the chaos suite's private database: migrate, the public tenant, small clinics and one big one.

Run as `python -m tests.chaos.seed SMALL BIG_MB` with the suite's environment (its DATABASE_URL).
The big clinic carries an extra table of incompressible-ish text, so its dump and upload last long
enough to be killed in the middle.
"""

from __future__ import annotations

import os
import sys


def main(small: int, big_mb: int) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction
    from django_tenants.utils import get_tenant_domain_model, get_tenant_model, schema_context

    from clinic.demo import fill_clinic

    call_command("migrate_schemas", shared=True, verbosity=0, interactive=False)
    call_command("setup_backup_schedule", verbosity=0)
    Tenant, Domain = get_tenant_model(), get_tenant_domain_model()
    if not Tenant.objects.filter(schema_name="public").exists():
        public = Tenant.objects.create(schema_name="public", nombre="Public")
        Domain.objects.create(tenant=public, domain="localhost", is_primary=True)
    for n in range(small + 1):
        schema = "chaos_big" if n == small else f"chaos_{n:02d}"
        tenant = Tenant(schema_name=schema, nombre=f"Chaos {schema}", backup_schedule="disabled")
        tenant.save(verbosity=0)
        Domain.objects.create(tenant=tenant, domain=f"{schema}.localhost", is_primary=True)
        with schema_context(schema), transaction.atomic():
            fill_clinic(schema, patients=40)
    rows = max(1, big_mb * 1024 // 64)  # 64 KiB of hex text a row
    with connection.cursor() as cur:
        cur.execute("CREATE TABLE chaos_big.blob (id int PRIMARY KEY, data text)")
        cur.execute("INSERT INTO chaos_big.blob SELECT g, (SELECT string_agg(md5(random()::text || g || x), '') "
                    "FROM generate_series(1, 2048) x) FROM generate_series(1, %s) g", (rows,))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
