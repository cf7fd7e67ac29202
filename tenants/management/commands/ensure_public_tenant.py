"""`manage.py ensure_public_tenant [--domain localhost]`: the public tenant and its domain, once (deploy step)."""

from django.core.management.base import BaseCommand
from django_tenants.utils import get_public_schema_name, get_tenant_domain_model, get_tenant_model


class Command(BaseCommand):
    help = "Create the public tenant (the operators' admin) and its domain unless they exist; safe to rerun."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--domain", default="localhost", help="The public domain (default localhost).")

    def handle(self, *args, domain: str, **options) -> None:
        Tenant, Domain = get_tenant_model(), get_tenant_domain_model()
        public, created = Tenant.objects.get_or_create(schema_name=get_public_schema_name(),
                                                       defaults={"nombre": "Public (operators)"})
        Domain.objects.get_or_create(domain=domain, defaults={"tenant": public, "is_primary": True})
        self.stdout.write(f"public tenant {'created' if created else 'present'}, domain {domain}")
