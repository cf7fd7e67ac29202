"""An app holding only the commands whose names django-tenants also uses (`clone_tenant`).

Django takes a command from the first app in INSTALLED_APPS that has one, and django-tenants, which a
django-tenants project lists first, has its own `clone_tenant` (a copy of a live schema). A project that wants
this product's `clone_tenant <record_id> <new_schema> --domain <domain>` (a new tenant from a backup) lists
"backups.cli" before "django_tenants"; it has no models, tables or migrations.
"""
