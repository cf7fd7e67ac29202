"""A tenant is an identity: a clinic created on a deleted clinic's kept schema (auto_drop_schema = False) does not
accept that clinic's users, passwords or DRF tokens, while its own new users work."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection
from django_tenants.utils import get_tenant_domain_model, get_tenant_model, schema_context
from rest_framework.authtoken.models import Token

from accounts.models import User
from backups.models import InheritedUser

from .conftest import api_client

SCHEMA, DOMAIN = "clinica_reused", "reused.localhost"
TABLES = ("accounts_user", "authtoken_token", "token_blacklist_outstandingtoken", "token_blacklist_blacklistedtoken")


@pytest.fixture
def kept_schema(creds) -> Iterator[None]:
    """A schema with the tables a clinic's logins use (copied from clinica_demo's, so no migration runs)."""
    with connection.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {SCHEMA}")
        for table in TABLES:
            cur.execute(f"CREATE TABLE {SCHEMA}.{table} (LIKE clinica_demo.{table} INCLUDING ALL)")
    try:
        yield
    finally:
        connection.set_schema_to_public()
        Tenant = get_tenant_model()
        get_tenant_domain_model().objects.filter(domain=DOMAIN).delete()
        Tenant.objects.filter(schema_name=SCHEMA).delete()
        InheritedUser.objects.filter(schema_name=SCHEMA).delete()
        with connection.cursor() as cur:
            cur.execute(f"DROP SCHEMA {SCHEMA} CASCADE")


def _clinic(name: str):
    connection.set_schema_to_public()  # a request of the test client leaves the clinic's schema set
    tenant = get_tenant_model()(schema_name=SCHEMA, nombre=name)
    tenant.save()
    get_tenant_domain_model().objects.create(domain=DOMAIN, tenant=tenant, is_primary=True)
    return tenant


def _admin(username: str) -> tuple[User, str]:
    with schema_context(SCHEMA):
        user = User.objects.create_user(username=username, email=f"{username}@example.com", password="pw-" + username,
                                        role=User.Role.ADMIN)
        return user, Token.objects.create(user=user).key


def test_a_clinic_on_a_kept_schema_refuses_the_earlier_clinics_users_and_tokens(kept_schema):
    old = _clinic("Deleted clinic")
    old_admin, old_token = _admin("old-admin")
    assert api_client(DOMAIN, f"Token {old_token}").get("/api/backups/history/").status_code == 200
    connection.set_schema_to_public()
    old.delete()  # auto_drop_schema = False: the schema, its users and their tokens stay
    get_tenant_domain_model().objects.filter(domain=DOMAIN).delete()

    new = _clinic("New clinic, same schema name")
    assert new.tenant_uid != old.tenant_uid
    response = api_client(DOMAIN, f"Token {old_token}").get("/api/backups/history/")
    assert response.status_code == 401, response.content
    assert "earlier tenant" in response.json()["detail"]
    for path in ("/api/auth/token/", "/api/auth/jwt/"):  # nor does the old admin's password open it
        login = api_client(DOMAIN).post(path, {"username": "old-admin", "password": "pw-old-admin"}, format="json")
        assert login.status_code == 401, (path, login.content)
        assert "earlier tenant" in login.json()["detail"]

    _, new_token = _admin("new-admin")  # the new clinic's own users work
    assert api_client(DOMAIN, f"Token {new_token}").get("/api/backups/history/").status_code == 200
    login = api_client(DOMAIN).post("/api/auth/jwt/", {"username": "new-admin", "password": "pw-new-admin"},
                                    format="json")
    assert login.status_code == 200, login.content
    jwt = api_client(DOMAIN, f"Bearer {login.json()['access']}")
    assert jwt.get("/api/backups/history/").status_code == 200

    inherited = InheritedUser.objects.get(tenant_uid=new.tenant_uid)  # what the host sees, and may delete
    assert (inherited.user_pk, inherited.username, inherited.schema_name) == (str(old_admin.pk), "old-admin", SCHEMA)
    inherited.delete()  # re-admitted on purpose
    assert api_client(DOMAIN, f"Token {old_token}").get("/api/backups/history/").status_code == 200
