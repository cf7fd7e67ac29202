"""Tokens end when they should: bound to the tenant's identity, revoked by a password change or a
deactivation, refresh tokens used once, logout, and throttles counted across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator

import pytest
from django.conf import settings
from django_tenants.utils import get_tenant_model, schema_context
from rest_framework.authtoken.models import Token

from accounts.models import User

from .conftest import api_client, mint_jwt

SCHEMA = "clinica_demo"
HISTORY = "/api/backups/history/"
REFRESH = "/api/auth/jwt/refresh/"
LOGOUT = "/api/auth/logout/"
PASSWORD = "a-long-test-password"


@pytest.fixture
def member() -> Iterator[User]:
    """A throwaway ADMIN of clinica_demo (the shared credentials of creds stay untouched)."""
    name = f"member-{uuid.uuid4().hex[:8]}@clinica_demo"
    with schema_context(SCHEMA):
        user = User.objects.create_user(username=name, email=name, password=PASSWORD, role=User.Role.ADMIN)
    try:
        yield user
    finally:
        with schema_context(SCHEMA):
            User.objects.filter(pk=user.pk).delete()


def _login_jwt(user: User) -> tuple[str, str]:
    response = api_client(SCHEMA).post("/api/auth/jwt/", {"username": user.username, "password": PASSWORD},
                                       format="json")
    assert response.status_code == 200, response.content
    return response.json()["access"], response.json()["refresh"]


def _token(user: User) -> str:
    response = api_client(SCHEMA).post("/api/auth/token/", {"username": user.username, "password": PASSWORD},
                                       format="json")
    assert response.status_code == 200, response.content
    return response.json()["token"]


def _status(authorization: str) -> int:
    return api_client(SCHEMA, authorization).get(HISTORY).status_code


def _refresh(refresh: str):
    return api_client(SCHEMA).post(REFRESH, {"refresh": refresh}, format="json")


def test_a_jwt_of_an_earlier_tenant_with_the_same_schema_name_is_refused(member):
    access, refresh = _login_jwt(member)
    assert _status(f"Bearer {access}") == 200
    Tenant = get_tenant_model()
    tenant = Tenant.objects.get(schema_name=SCHEMA)
    old_uid = tenant.tenant_uid
    Tenant.objects.filter(pk=tenant.pk).update(tenant_uid=uuid.uuid4())  # deleted, then created again
    try:
        assert _status(f"Bearer {access}") == 401
        assert _refresh(refresh).status_code == 401
    finally:
        Tenant.objects.filter(pk=tenant.pk).update(tenant_uid=old_uid)
    assert _status(f"Bearer {access}") == 200  # the same identity again: the token is its own


def test_a_jwt_without_the_identity_claim_is_refused(member):
    from rest_framework_simplejwt.tokens import RefreshToken

    with schema_context(SCHEMA):  # the outstanding-token table lives in the tenant's schema
        legacy = RefreshToken.for_user(member)
    legacy["schema"] = SCHEMA  # what tokens carried before identities: a schema name only
    assert _status(f"Bearer {legacy.access_token}") == 401
    assert _refresh(str(legacy)).status_code == 401


@pytest.mark.parametrize("change", ["password", "deactivate"])
def test_a_password_change_or_deactivation_revokes_every_token(member, change):
    access, refresh = _login_jwt(member)
    drf = _token(member)
    assert _status(f"Bearer {access}") == 200 and _status(f"Token {drf}") == 200
    with schema_context(SCHEMA):
        user = User.objects.get(pk=member.pk)
        if change == "password":
            user.set_password("another-long-password")
        else:
            user.is_active = False
        user.save()
        assert not Token.objects.filter(user=user).exists()
    assert _status(f"Bearer {access}") == 401
    assert _status(f"Token {drf}") == 401
    assert _refresh(refresh).status_code == 401


def test_a_password_set_by_a_queryset_update_still_ends_the_jwts(member):
    access, _ = _login_jwt(member)
    with schema_context(SCHEMA):
        User.objects.filter(pk=member.pk).update(password="pbkdf2_sha256$1$x$y")
    assert _status(f"Bearer {access}") == 401


def test_refresh_tokens_rotate_and_a_replay_ends_the_whole_session(member):
    other_access, other_refresh = _login_jwt(member)  # another session of the same user
    _, first = _login_jwt(member)
    response = _refresh(first)
    assert response.status_code == 200, response.content
    second, second_access = response.json()["refresh"], response.json()["access"]
    assert second != first
    assert _status(f"Bearer {second_access}") == 200
    third = _refresh(second).json()
    assert _refresh(first).status_code == 401  # replayed: whoever holds the rest of the session loses it too
    assert _refresh(third["refresh"]).status_code == 401
    assert _status(f"Bearer {third['access']}") == 401
    assert _status(f"Bearer {other_access}") == 200  # the user's other session goes on
    assert _refresh(other_refresh).status_code == 200


def test_two_concurrent_uses_of_one_refresh_token_give_one_pair(member):
    _, refresh = _login_jwt(member)
    barrier = threading.Barrier(4)
    statuses: list[int] = []

    def use() -> None:
        from django.db import connection

        try:
            barrier.wait()
            statuses.append(_refresh(refresh).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 401, 401, 401]


def test_logout_ends_the_session_and_only_that_session(member):
    access, refresh = _login_jwt(member)
    other_access, other_refresh = _login_jwt(member)
    response = api_client(SCHEMA).post(LOGOUT, {"refresh": refresh}, format="json")
    assert response.status_code == 204, response.content
    assert _status(f"Bearer {access}") == 401
    assert _refresh(refresh).status_code == 401
    assert _status(f"Bearer {other_access}") == 200
    assert _refresh(other_refresh).status_code == 200
    assert api_client(SCHEMA).post(LOGOUT, {"refresh": refresh}, format="json").status_code == 401


def test_logout_with_a_drf_token_deletes_it(member):
    drf = _token(member)
    assert api_client(SCHEMA, f"Token {drf}").post(LOGOUT, {}, format="json").status_code == 204
    assert _status(f"Token {drf}") == 401
    assert api_client(SCHEMA).post(LOGOUT, {}, format="json").status_code == 400  # nothing to end


def test_logout_refuses_another_tenants_refresh_token(creds):
    with schema_context("clinica_sonrisa"):
        _, refresh = mint_jwt(User.objects.get(username="admin@clinica_sonrisa"), "clinica_sonrisa")
    assert api_client(SCHEMA).post(LOGOUT, {"refresh": refresh}, format="json").status_code == 401
    assert api_client("clinica_sonrisa").post(REFRESH, {"refresh": refresh}, format="json").status_code == 200


def test_auth_throttle_counts_across_processes():
    """Another process (a second gunicorn worker) spends the address's budget; this one is then refused."""
    rate = int(settings.BACKUPS_API_THROTTLE_RATES["auth"].split("/")[0])
    script = (
        "import django, json; django.setup()\n"
        "from rest_framework.test import APIClient\n"
        "c = APIClient(HTTP_HOST='demo.localhost')\n"
        f"codes = [c.post('/api/auth/token/', {{'username': 'nobody', 'password': 'x'}}, format='json')"
        f".status_code for _ in range({rate})]\n"
        "print(json.dumps(codes))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=settings.BASE_DIR, capture_output=True, text=True,
                         env={**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings"}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert set(json.loads(out.stdout.strip().splitlines()[-1])) == {401}  # each spent one of the budget
    response = api_client(SCHEMA).post("/api/auth/token/", {"username": "nobody", "password": "x"}, format="json")
    assert response.status_code == 429, response.content
    assert response["Retry-After"]
