"""The admin's login is throttled: a few failures lock out the user and the address, in every web process;
the API's own logins are neither counted nor refused by it."""

from __future__ import annotations

import re
import uuid

import pytest
import requests
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django_tenants.utils import schema_context

from .conftest import api_client
from .web_server import procfile_web

LOGIN = "/admin/login/?next=/admin/"
RIGHT = "the-right-password-1"


@pytest.fixture
def operator(django_db_setup, django_db_blocker):  # noqa: F811
    """A superuser of the public schema with a name no earlier run used (failures live in Redis for minutes)."""
    with django_db_blocker.unblock(), schema_context("public"):
        name = f"ops-lock-{uuid.uuid4().hex[:8]}"
        user = get_user_model().objects.create_superuser(username=name, email=f"{name}@example.com", password=RIGHT)
    yield user.username
    with django_db_blocker.unblock(), schema_context("public"):
        get_user_model().objects.filter(pk=user.pk).update(is_active=False)  # deleting cascades into tenant tables


def _post(client: Client, username: str, password: str, addr: str):
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=addr, HTTP_HOST="localhost")


def _login_over_http(base: str, username: str, password: str) -> requests.Response:
    """The admin's login form as a browser sends it (CSRF cookie and token), to the gunicorn process."""
    with requests.Session() as session:
        page = session.get(f"{base}{LOGIN}", headers={"Host": "localhost"}, timeout=10)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        return session.post(f"{base}{LOGIN}", headers={"Host": "localhost", "Referer": f"{base}{LOGIN}"},
                            data={"username": username, "password": password, "csrfmiddlewaretoken": token},
                            allow_redirects=False, timeout=10)


def test_failures_lock_out_the_user_and_the_address_in_every_web_process(operator):
    client = Client()
    for _ in range(4):
        assert _post(client, operator, "wrong", "10.9.0.1").status_code == 200  # the form again, with its error
    assert _post(client, operator, "wrong", "10.9.0.1").status_code == 429  # the fifth: locked out
    assert _post(client, operator, RIGHT, "10.9.0.1").status_code == 429  # even with the right password
    assert _post(client, operator, RIGHT, "10.9.0.2").status_code == 429  # the user, from any address
    with procfile_web("test-admin-login.log", WEB_CONCURRENCY="1") as base:  # another process, the same count
        response = _login_over_http(base, operator, RIGHT)
        assert response.status_code == 429, response.status_code
        assert "locked" in response.text.lower()
    call_command("axes_reset_username", operator)  # what the README tells ops to run
    assert _post(client, operator, RIGHT, "10.9.0.2").status_code == 302


def test_an_address_that_guesses_is_locked_out_for_every_user(operator):
    client = Client()
    for _ in range(5):
        _post(client, f"nobody-{uuid.uuid4().hex[:6]}", "wrong", "10.9.1.1")
    assert _post(client, operator, RIGHT, "10.9.1.1").status_code == 429
    response = _post(client, operator, RIGHT, "10.9.1.2")  # the user's own address still gets in
    assert response.status_code == 302 and response["Location"] == "/admin/"


def test_api_logins_are_not_counted_nor_refused(creds):
    client = api_client("clinica_demo")
    for _ in range(6):  # past the admin's limit of 5
        response = client.post("/api/auth/token/", {"username": "admin@clinica_demo", "password": "wrong"},
                               format="json", REMOTE_ADDR="10.9.2.1")
        assert response.status_code == 401, response.content[:200]
    response = client.post("/api/auth/token/", {"username": "admin@clinica_demo", "password": "demo-password"},
                           format="json", REMOTE_ADDR="10.9.2.1")
    assert response.status_code == 200, response.content[:200]
    assert response.json()["token"]
