"""Fast tests of the pure helpers in scripts/services.py (no server is started here)."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
from pathlib import Path

import pytest
from dotenv import dotenv_values

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "services.py"
_spec = importlib.util.spec_from_file_location("services_script", SCRIPT)
services = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(services)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.4.5.6", "localhost", "LocalHost", "::1", "[::1]", None, ""])
def test_is_loopback_accepts_local_addresses(host):
    assert services.is_loopback(host)


@pytest.mark.parametrize("host", ["10.0.0.1", "0.0.0.0", "db.example.com", "::2", "192.0.2.1", "localhost.evil.com"])
def test_is_loopback_rejects_other_hosts(host):
    assert not services.is_loopback(host)


@pytest.mark.parametrize(
    ("url", "default", "expected"),
    [
        ("postgres://postgres@127.0.0.1:5433/tenant_backups", 5432, ("127.0.0.1", 5433)),
        ("postgresql://u:p@db.internal/x", 5432, ("db.internal", 5432)),
        ("postgres:///x", 5432, (None, 5432)),
        ("postgres://u@[::1]:6000/x", 5432, ("::1", 6000)),
        ("redis://127.0.0.1/0", 6379, ("127.0.0.1", 6379)),
        ("redis://:secret@cache:6380/2", 6379, ("cache", 6380)),
    ],
)
def test_split_url(url, default, expected):
    assert services.split_url(url, default) == expected


def test_address_formats_host_and_port():
    assert services.address("postgres:///x", 5432) == "localhost:5432"
    assert services.address("redis://cache:6380/1", 6379) == "cache:6380"


def test_replace_host_port_keeps_user_path_query_and_drops_password():
    url = "postgres://app:s3cret@db.example.com:5432/tenant_backups?sslmode=disable"
    assert services.replace_host_port(url, "127.0.0.1", 41234) == (
        "postgres://app@127.0.0.1:41234/tenant_backups?sslmode=disable"
    )
    assert services.replace_host_port("redis://:pw@cache:6379/3", "127.0.0.1", 7000) == "redis://127.0.0.1:7000/3"
    assert services.replace_host_port("postgres://u@h/x", "::1", 5) == "postgres://u@[::1]:5/x"


def test_format_env_writes_plain_key_value_lines():
    text = services.format_env({"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/db", "REDIS_URL": "redis://x:1/0"})
    assert text == "DATABASE_URL=postgres://postgres@127.0.0.1:5432/db\nREDIS_URL=redis://x:1/0\n"


@pytest.mark.parametrize("value", ["has space", "pa$$word", "a#b", "'quoted'", '"q"', "back\\slash", "new\nline"])
def test_format_env_rejects_values_make_or_sh_would_mangle(value):
    with pytest.raises(services.ServiceError) as err:
        services.format_env({"DATABASE_URL": value})
    assert "DATABASE_URL" in str(err.value)
    assert value not in str(err.value)  # never echo a value that may hold a password


def test_format_env_rejects_bad_keys():
    with pytest.raises(services.ServiceError):
        services.format_env({"BAD-KEY": "x"})


def _env_file(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    values = {
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/tenant_backups",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "BACKUPS_PG_BIN_DIR": "/usr/lib/postgresql/15/bin",
    }
    path = tmp_path / "nested" / "services.env"
    services.write_env_file(path, values)
    return path, values


def test_write_env_file_is_read_back_by_sh(tmp_path):
    path, values = _env_file(tmp_path)
    assert not path.with_name(path.name + ".tmp").exists()
    out = subprocess.run(
        ["sh", "-c", f'set -a; . "{path}"; printf "%s|%s|%s" "$DATABASE_URL" "$REDIS_URL" "$BACKUPS_PG_BIN_DIR"'],
        capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"},
    ).stdout
    assert out == "|".join(values.values())


def test_write_env_file_is_read_back_by_make(tmp_path):
    path, values = _env_file(tmp_path)
    makefile = tmp_path / "Makefile"
    makefile.write_text(f"include {path}\nall:\n\t@echo '$(DATABASE_URL)|$(REDIS_URL)|$(BACKUPS_PG_BIN_DIR)'\n")
    out = subprocess.run(["make", "-s", "-f", str(makefile)], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"}).stdout
    assert out.strip() == "|".join(values.values())


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)\n", 15),
        ("pg_dump (PostgreSQL) 18.6\n", 18),
        ("pg_dump (PostgreSQL) 9.6.24\n", 9),
        ("bash: pg_dump: command not found", None),
    ],
)
def test_parse_pg_dump_major(output, major):
    assert services.parse_pg_dump_major(output) == major


@pytest.mark.parametrize(("num", "text"), [(150020, "15.20"), (180006, "18.6"), (100000, "10.0"), (90624, "9.6.24")])
def test_format_server_version(num, text):
    assert services.format_server_version(num) == text


def test_load_settings_precedence(tmp_path, monkeypatch):
    dotenv = tmp_path / ".env"
    dotenv.write_text("DATABASE_URL=postgres://from-dotenv/db\nREDIS_URL=redis://from-dotenv/0\nOTHER=1\n")
    generated = tmp_path / "services.env"
    generated.write_text("DATABASE_URL=postgres://from-generated/db\n")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://from-environment/0")

    settings = services.load_settings([dotenv, generated, tmp_path / "missing.env"])
    assert settings == {"DATABASE_URL": "postgres://from-generated/db", "REDIS_URL": "redis://from-environment/0"}

    monkeypatch.delenv("REDIS_URL")
    assert services.load_settings([]) == services.DEFAULTS


def test_free_port_prefers_a_free_port_and_avoids_a_taken_one():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        other = services.free_port(taken)
        assert other != taken and other > 0
    assert services.free_port(other) == other


def test_free_port_reuses_a_port_left_in_time_wait():
    """A private server that just stopped leaves TIME_WAIT sockets; its port must still count as free."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server side closes first, so its end of the connection sits in TIME_WAIT
        client.close()
    assert services.free_port(port) == port


def test_main_fails_with_exit_2_and_one_sentence_on_a_bad_url(monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", "not-a-url")
    assert services.main(["up", "--env-file", "/nonexistent/never-written.env"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "DATABASE_URL" in err and "Traceback" not in err


def test_createdb_on_a_closed_port_says_to_run_up(monkeypatch, capsys):
    port = services.free_port()
    monkeypatch.setenv("DATABASE_URL", f"postgres://postgres@127.0.0.1:{port}/x")
    assert services.main(["createdb", "whatever", "--env-file", "/nonexistent.env"]) == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}" in err and "services.py up" in err


def test_up_keeps_the_servers_it_wrote_and_says_when_they_change(tmp_path, monkeypatch, capsys):
    """A new shell without DATABASE_URL: `make manage` keeps the database `make demo` used (the env file's)."""
    env_file = tmp_path / "services.env"
    chosen = {key: os.environ.get(key) or default for key, default in services.DEFAULTS.items()}
    services.write_env_file(env_file, chosen)
    monkeypatch.setattr(services, "ROOT", tmp_path)  # no .env
    monkeypatch.setattr(services, "STARTED", tmp_path / "started.json")  # servers of its own it started: none
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert services.main(["up", "--env-file", str(env_file)]) == 0
    written = dotenv_values(env_file)
    assert {k: written[k] for k in chosen} == chosen
    assert "changed" not in capsys.readouterr().out

    other = chosen["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
    monkeypatch.setenv("DATABASE_URL", other)
    assert services.main(["up", "--env-file", str(env_file)]) == 0
    assert dotenv_values(env_file)["DATABASE_URL"] == other
    assert f"DATABASE_URL changed: services.env named {chosen['DATABASE_URL']}, now {other} (from the environment)." \
        in capsys.readouterr().out
