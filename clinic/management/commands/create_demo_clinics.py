"""`manage.py create_demo_clinics`: the public tenant plus three clinics full of realistic data."""

from django.core.management.base import BaseCommand
from django.db import transaction
from django_tenants.utils import get_tenant_domain_model, get_tenant_model, schema_context

from clinic.demo import fill_clinic

DEMO_CLINICS = [
    ("clinica_demo", "Clínica Dental Demo", "demo.localhost"),
    ("clinica_sonrisa", "Clínica Sonrisa Feliz", "sonrisa.localhost"),
    ("clinica_norte", "Centro Odontológico del Norte — Ñandú", "norte.localhost"),
]


class Command(BaseCommand):
    help = "Create the public tenant and three demo clinics with patients, appointments, treatments and invoices."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--patients", type=int, default=1500, help="Patients per clinic (rows scale with it).")
        parser.add_argument("--quiet", action="store_true")

    def handle(self, *args, patients: int, quiet: bool, **options) -> None:
        Tenant, Domain = get_tenant_model(), get_tenant_domain_model()
        if not Tenant.objects.filter(schema_name="public").exists():
            public = Tenant.objects.create(schema_name="public", nombre="Public (operators)")
            Domain.objects.create(tenant=public, domain="localhost", is_primary=True)
        for schema, name, domain in DEMO_CLINICS:
            if Tenant.objects.filter(schema_name=schema).exists():
                if not quiet:
                    self.stdout.write(f"{schema}: exists")
                continue
            tenant = Tenant(schema_name=schema, nombre=name)
            tenant.save(verbosity=0)  # creates and migrates the schema
            Domain.objects.create(tenant=tenant, domain=domain, is_primary=True)
            with schema_context(schema), transaction.atomic():
                counts = fill_clinic(schema, patients=patients)
            if not quiet:
                self.stdout.write(f"{schema}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
