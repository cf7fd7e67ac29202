"""Auth: DRF tokens and JWTs live in (and are bound to) the clinic whose domain serves the request."""

from __future__ import annotations

import base64
import json

import pytest
from django.test import RequestFactory
from rest_framework.test import APIClient

from backups.api.throttling import TenantAuthRateThrottle, TenantUserRateThrottle

from .conftest import api_client

HISTORY = "/api/backups/history/"


def test_token_endpoint_gives_a_token_that_works_on_its_clinic_only(creds):
    client = api_client("clinica_demo")
    response = client.post("/api/auth/token/", {"username": "admin@clinica_demo", "password": "demo-password"},
                           format="json")
    assert response.status_code == 200, response.content
    token = response.json()["token"]
    assert token == creds["clinica_demo"].admin_token  # one token per user, in the clinic's schema
    assert api_client("clinica_demo", f"Token {token}").get(HISTORY).status_code == 200
    other = api_client("clinica_sonrisa", f"Token {token}").get(HISTORY)
    assert other.status_code == 401
    assert other["WWW-Authenticate"]


@pytest.mark.parametrize("body", [
    {"username": "admin@clinica_demo", "password": "wrong"},
    {"username": "admin@clinica_sonrisa", "password": "demo-password"},  # a user of another clinic
])
def test_bad_credentials_are_401_with_a_challenge(body):
    response = api_client("clinica_demo").post("/api/auth/token/", body, format="json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Token")
    assert "detail" in response.json()


@pytest.mark.parametrize("body", [
    {},
    {"username": "admin@clinica_demo"},
    {"username": "\ud800", "password": "x"},  # a lone surrogate cannot even be looked up
    {"username": "admin@clinica_demo", "password": "\udcff"},
    {"username": "a\x00b", "password": "x"},
    ["admin", "x"],
])
def test_malformed_credentials_are_400(body):
    for url in ("/api/auth/token/", "/api/auth/jwt/"):  # json.dumps escapes surrogates as \udXXX, as clients may
        response = api_client("clinica_demo").post(url, json.dumps(body), content_type="application/json")
        assert response.status_code == 400, (url, body, response.content)


def test_jwt_pair_carries_the_schema_and_is_refused_on_other_clinics(creds):
    client = api_client("clinica_demo")
    response = client.post("/api/auth/jwt/", {"username": "admin@clinica_demo", "password": "demo-password"},
                           format="json")
    assert response.status_code == 200, response.content
    access, refresh = response.json()["access"], response.json()["refresh"]
    payload = access.split(".")[1]
    claims = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    assert b'"schema":"clinica_demo"' in claims.replace(b" ", b"")
    assert api_client("clinica_demo", f"Bearer {access}").get(HISTORY).status_code == 200
    # user 1 exists in every clinic: the same token on another domain must not log in as their user 1
    for schema in ("clinica_sonrisa", "clinica_norte"):
        replay = api_client(schema, f"Bearer {access}").get(HISTORY)
        assert replay.status_code == 401, schema
        assert replay["WWW-Authenticate"].startswith("Bearer")
    # refresh works on the issuing domain only
    fresh = client.post("/api/auth/jwt/refresh/", {"refresh": refresh}, format="json")
    assert fresh.status_code == 200, fresh.content
    assert api_client("clinica_demo", f"Bearer {fresh.json()['access']}").get(HISTORY).status_code == 200
    elsewhere = api_client("clinica_sonrisa").post("/api/auth/jwt/refresh/", {"refresh": refresh}, format="json")
    assert elsewhere.status_code == 401


@pytest.mark.parametrize("refresh", ["", "garbage", "a.b.c", "\udcff"])
def test_bad_refresh_tokens_are_refused_without_a_500(refresh):
    response = api_client("clinica_demo").post("/api/auth/jwt/refresh/", json.dumps({"refresh": refresh}),
                                               content_type="application/json")
    assert response.status_code in (400, 401), response.content


@pytest.mark.parametrize("authorization", [
    "Basic " + base64.b64encode(b"admin@clinica_demo:demo-password").decode(),  # Basic auth is off
    "Token not-a-token",
    "Token " + "0" * 40,
    "Token a b",
    "Bearer not.a.jwt",
    "Bearer",
])
def test_other_credentials_are_401(authorization):
    response = api_client("clinica_demo", authorization).get(HISTORY)
    assert response.status_code == 401, (authorization, response.content)
    assert response["WWW-Authenticate"]


def test_session_login_is_not_accepted_by_the_api():
    client = APIClient(HTTP_HOST="demo.localhost")
    client.defaults["HTTP_COOKIE"] = "sessionid=whatever"
    assert client.get(HISTORY).status_code == 401


def test_public_domain_serves_no_api(creds):
    client = APIClient(HTTP_HOST="localhost")
    client.credentials(HTTP_AUTHORIZATION=f"Token {creds['clinica_demo'].admin_token}")
    for url in (HISTORY, "/api/backups/create/", "/api/auth/token/", "/api/schema/", "/api/backups/schedule/"):
        assert client.get(url).status_code == 404, url


def test_throttle_keys_name_the_clinic():
    class User:
        pk = 1
        is_authenticated = True

    keys = set()
    for schema in ("clinica_demo", "clinica_sonrisa"):
        request = RequestFactory().get("/", REMOTE_ADDR="127.0.0.1")
        request.tenant = type("T", (), {"schema_name": schema})()
        request.user = User()
        key = TenantUserRateThrottle().get_cache_key(request, None)
        assert schema in key
        keys.add(key)
        assert schema in TenantAuthRateThrottle().get_cache_key(request, None)
    assert len(keys) == 2
