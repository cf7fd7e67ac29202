"""A private Ceph radosgw on loopback for the S3 tests: one mon, one BlueStore OSD on a sparse file, one radosgw.

    python scripts/radosgw.py up   [--env-file var/radosgw.env]   # install if missing, start (or reuse), write env
    python scripts/radosgw.py down                                # stop what `up` started, by pid, and remove it

Why radosgw: it checks SigV4 signatures, presigned links' expiry and server-side encryption headers, which
moto does not, so the S3 tests can fail where a real store would refuse. Debian's packages (ceph-mon,
ceph-osd, radosgw) are installed with apt-get when missing, which needs root; anything that cannot be
done ends with one sentence on stderr and exit code 2.

The env file holds TEST_S3_* variables: the endpoint, a throwaway access key and secret generated at start,
the region, and the id of a KMS test key (radosgw's `testing` KMS backend) so that aws:kms can be tested.
The cluster lives in var/radosgw/ and is thrown away by `down` (and rebuilt by the next `up`).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = ROOT / "var" / "radosgw"
STATE_FILE = STATE_DIR / "started.json"
DEFAULT_ENV_FILE = ROOT / "var" / "radosgw.env"
PACKAGES = ("ceph-mon", "ceph-osd", "radosgw", "ceph-common")
BINARIES = ("ceph", "ceph-authtool", "monmaptool", "ceph-mon", "ceph-osd", "radosgw", "radosgw-admin")
DAEMONS = ("mon", "osd", "rgw")  # start order; stopped in reverse
REGION = "us-east-1"
KMS_KEY_ID = "backups-test-key"
EXTRA_STORAGE_CLASS = "STANDARD_IA"  # a second placement class, so storage classes can be tested
BLOCK_SIZE = 40 * 1024**3  # the OSD's sparse file: only what is written takes disk space
START_TIMEOUT = 120.0


class RadosgwError(Exception):
    """A failure the user can act on, described in one sentence."""


def display(path: Path) -> str:
    """A path relative to the repository when it lies inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def free_port() -> int:
    """A TCP port nobody listens on right now, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(cmd: list[str], *, timeout: float = 120, log: Path | None = None, env: dict[str, str] | None = None
        ) -> tuple[int, str]:
    """Run a command to completion, its output in a temporary file (a daemon that inherits a pipe would hang us)."""
    with tempfile.TemporaryFile("w+") as out:
        try:
            proc = subprocess.run(cmd, check=False, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                  text=True, timeout=timeout, env=env)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = -1
        out.seek(0)
        output = out.read()
    if log is not None:
        with log.open("a") as handle:
            handle.write(f"$ {' '.join(cmd)}\n{output}\n")
    return code, output


def pid_alive(pid: int, binary: str) -> bool:
    """Whether `pid` is still the `binary` we started (a recycled pid belongs to someone else)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return os.path.basename(cmdline) == binary and stat.rsplit(")", 1)[1].split()[0] != "Z"


def daemon_binary(name: str) -> str:
    return {"mon": "ceph-mon", "osd": "ceph-osd", "rgw": "radosgw"}[name]


def load_state() -> dict[str, Any]:
    try:
        return json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        return {}


def save_state(state: dict[str, Any]) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = STATE_FILE.with_name(STATE_FILE.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.chmod(tmp, 0o600)  # it holds the throwaway secret key
    tmp.replace(STATE_FILE)


# -- installing ----------------------------------------------------------------------------------------------


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if shutil.which(name) is None]


def ensure_installed() -> None:
    """Install Debian's Ceph packages when a binary is missing; needs root and apt-get."""
    if not missing_binaries():
        return
    packages = " ".join(PACKAGES)
    if shutil.which("apt-get") is None:
        raise RadosgwError(f"radosgw is not installed and there is no apt-get to install it: install {packages} "
                           "from your distribution, or run the tests against moto with TEST_S3=moto.")
    if os.geteuid() != 0:
        raise RadosgwError(f"radosgw is not installed and installing it needs root: run "
                           f"`sudo apt-get install {packages}`, or run the tests against moto with TEST_S3=moto.")
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    log = STATE_DIR / "apt.log"
    log.write_text("")
    print(f"Installing {packages} with apt-get (log in {display(log)}) ...", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=300"]
    run(["apt-get", *lock, "update", "-q"], timeout=600, log=log, env=env)
    code, _ = run(["apt-get", *lock, "install", "-y", "-q", "--no-install-recommends", *PACKAGES],
                  timeout=1200, log=log, env=env)
    if code != 0 or missing_binaries():
        raise RadosgwError(f"apt-get could not install {packages} (output in {display(log)}): install them by "
                           "hand, or run the tests against moto with TEST_S3=moto.")


def ceph_version() -> str:
    """'16.2.15' from `radosgw --version`."""
    _, output = run(["radosgw", "--version"], timeout=30)
    match = re.search(r"ceph version (\S+)", output)
    return match.group(1) if match else "unknown"


# -- the cluster ---------------------------------------------------------------------------------------------


def ceph_conf(base: Path, fsid: str, mon_port: int, rgw_port: int, kms_key: str) -> str:
    """One small cluster on loopback: size-1 pools, small caches, radosgw's testing KMS backend over HTTP."""
    return f"""[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
public addr = 127.0.0.1
keyring = {base}/keyring
run dir = {base}/run
admin socket = {base}/run/$name.asok
log file = {base}/log/$name.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
mon data avail warn = 1
mon data avail crit = 1

[mon]
mon data = {base}/mon
mon allow pool delete = true

[osd]
osd data = {base}/osd
osd objectstore = bluestore
bluestore block create = true
bluestore block size = {BLOCK_SIZE}
bluestore cache autotune = false
bluestore cache size = {64 * 1024 * 1024}
osd memory target = {896 * 1024 * 1024}
osd op num shards = 1
osd op num threads per shard = 2

[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
rgw data = {base}/rgw
rgw thread pool size = 64
# Reclaim deleted objects' space within a minute, not after radosgw's default two hours: the tests and
# benchmarks write and delete gigabytes, which would otherwise fill the OSD.
rgw gc obj min wait = 10
rgw gc processor period = 30
rgw gc processor max time = 30
# aws:kms with the key below over plain HTTP; AES256 (SSE-S3) needs Vault in this release and is ignored.
rgw crypt require ssl = false
rgw crypt s3 kms backend = testing
rgw crypt s3 kms encryption keys = {KMS_KEY_ID}={kms_key}
"""


def start_daemon(name: str, cmd: list[str], base: Path, state: dict[str, Any]) -> None:
    """Start one daemon in the foreground (-f) of its own session, output in log/<name>.out; record its pid."""
    with (base / "log" / f"{name}.out").open("ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=base)
    state.setdefault("pids", {})[name] = proc.pid
    save_state(state)


def log_tail(base: Path, name: str, lines: int = 5) -> str:
    try:
        text = (base / "log" / f"{name}.out").read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())


def wait_for(what: str, probe, state: dict[str, Any], base: Path, name: str, timeout: float = START_TIMEOUT) -> None:
    """Poll `probe` until it is true; fail naming the daemon (and its log) if it dies or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        pid = state.get("pids", {}).get(name)
        if pid and not pid_alive(pid, daemon_binary(name)):
            raise RadosgwError(f"{daemon_binary(name)} exited while starting {what} (log in "
                               f"{display(base / 'log')}: {log_tail(base, name) or 'empty'}).")
        time.sleep(0.25)
    raise RadosgwError(f"{what} did not come up within {timeout:.0f} s (logs in {display(base / 'log')}).")


def rgw_answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/", timeout=2) as response:
            return response.status == 200
    except urllib.error.HTTPError:
        return True  # any S3 answer (an anonymous 403) means it serves
    except (urllib.error.URLError, OSError):
        return False


def random_key(length: int, alphabet: str = string.ascii_uppercase + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def create_cluster(state: dict[str, Any]) -> None:
    """Make and start mon, OSD and radosgw in STATE_DIR/cluster, then its S3 user; fills `state`."""
    base = STATE_DIR / "cluster"
    shutil.rmtree(base, ignore_errors=True)
    for sub in ("mon", "osd", "rgw", "run", "log"):
        (base / sub).mkdir(parents=True)
    log = base / "log" / "setup.log"
    conf = base / "ceph.conf"
    mon_port, rgw_port = free_port(), free_port()
    fsid = str(uuid.uuid4())
    conf.write_text(ceph_conf(base, fsid, mon_port, rgw_port, base64.b64encode(secrets.token_bytes(32)).decode()))
    os.chmod(conf, 0o600)
    endpoint = f"http://127.0.0.1:{rgw_port}"
    state.update({"base": str(base), "endpoint": endpoint, "pids": {}})
    save_state(state)
    c = ["-c", str(conf)]

    def must(cmd: list[str], what: str, timeout: float = 120) -> str:
        code, output = run(cmd, timeout=timeout, log=log)
        if code != 0:
            raise RadosgwError(f"{what} failed (`{' '.join(cmd[:2])}`, log in {display(log)}).")
        return output.strip()

    keyring = str(base / "keyring")
    must(["ceph-authtool", "--create-keyring", keyring, "--gen-key", "-n", "mon.", "--cap", "mon", "allow *"],
         "creating the keyring")
    for entity, caps in (("client.admin", {"mon": "allow *", "osd": "allow *", "mgr": "allow *"}),
                         ("osd.0", {"mon": "allow profile osd", "osd": "allow *", "mgr": "allow profile osd"}),
                         ("client.rgw", {"mon": "allow rw", "osd": "allow rwx"})):
        cap_args = [arg for kind, cap in caps.items() for arg in ("--cap", kind, cap)]
        must(["ceph-authtool", keyring, "--gen-key", "-n", entity, *cap_args], f"creating the key of {entity}")
    monmap = str(base / "monmap")
    must(["monmaptool", "--create", "--addv", "a", f"[v2:127.0.0.1:{mon_port}]", "--fsid", fsid, monmap],
         "creating the monitor map")
    must(["ceph-mon", *c, "--mkfs", "-i", "a", "--monmap", monmap, "--keyring", keyring], "creating the monitor")
    start_daemon("mon", ["ceph-mon", *c, "-i", "a", "-f"], base, state)
    wait_for("the Ceph monitor", lambda: run(["ceph", *c, "--connect-timeout", "3", "health"], timeout=10)[0] == 0,
             state, base, "mon")

    osd_uuid = str(uuid.uuid4())
    must(["ceph", *c, "osd", "new", osd_uuid, "0"], "registering the OSD")
    must(["ceph-osd", *c, "-i", "0", "--mkfs", "--osd-uuid", osd_uuid], "creating the BlueStore OSD", timeout=300)
    start_daemon("osd", ["ceph-osd", *c, "-i", "0", "-f"], base, state)

    def osd_up() -> bool:
        code, output = run(["ceph", *c, "osd", "stat", "-f", "json"], timeout=10)
        try:
            return code == 0 and json.loads(output).get("num_up_osds", 0) >= 1
        except ValueError:
            return False

    wait_for("the Ceph OSD", osd_up, state, base, "osd")

    admin = ["radosgw-admin", *c, "-n", "client.rgw", "--admin-socket="]
    # The user first: it makes the default zone and zonegroup the storage class is added to.
    access_key, secret_key = "TEST" + random_key(16), secrets.token_urlsafe(30)
    must([*admin, "user", "create", "--uid", "backups-tests", "--display-name", "tenant-backups tests",
          "--access-key", access_key, "--secret", secret_key], "creating the S3 user")
    must([*admin, "zonegroup", "placement", "add", "--rgw-zonegroup", "default", "--placement-id",
          "default-placement", "--storage-class", EXTRA_STORAGE_CLASS], "adding a storage class", timeout=300)
    must([*admin, "zone", "placement", "add", "--rgw-zone", "default", "--placement-id", "default-placement",
          "--storage-class", EXTRA_STORAGE_CLASS, "--data-pool", "default.rgw.standard-ia.data"],
         "adding a storage class to the zone")
    state.update({"access_key_id": access_key, "secret_access_key": secret_key})
    save_state(state)

    start_daemon("rgw", ["radosgw", *c, "-n", "client.rgw", "-f"], base, state)
    wait_for(f"radosgw at {endpoint}", lambda: rgw_answers(endpoint), state, base, "rgw")


def running(state: dict[str, Any]) -> bool:
    """Whether every daemon of `state` still runs and radosgw answers."""
    pids = state.get("pids", {})
    if not state.get("secret_access_key") or set(pids) != set(DAEMONS):
        return False
    return all(pid_alive(pids[name], daemon_binary(name)) for name in DAEMONS) and rgw_answers(state["endpoint"])


def stop(state: dict[str, Any]) -> list[str]:
    """Stop the daemons recorded in `state` (only those, by pid: radosgw, then the OSD, then the monitor)."""
    stopped = []
    for name in reversed(DAEMONS):
        pid = state.get("pids", {}).get(name)
        binary = daemon_binary(name)
        if not pid or not pid_alive(pid, binary):
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while pid_alive(pid, binary) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid, binary):
            os.kill(pid, signal.SIGKILL)
        stopped.append(f"{binary} (pid {pid})")
    return stopped


def env_values(state: dict[str, Any]) -> dict[str, str]:
    return {
        "TEST_S3": "radosgw",
        "TEST_S3_VERSION": state.get("version", ""),
        "TEST_S3_ENDPOINT_URL": state["endpoint"],
        "TEST_S3_ACCESS_KEY_ID": state["access_key_id"],
        "TEST_S3_SECRET_ACCESS_KEY": state["secret_access_key"],
        "TEST_S3_REGION": REGION,
        "TEST_S3_KMS_KEY_ID": KMS_KEY_ID,
        "TEST_S3_STORAGE_CLASS": EXTRA_STORAGE_CLASS,
        "TEST_S3_PIDS": ",".join(str(state["pids"][name]) for name in DAEMONS),
    }


def write_env_file(path: Path, values: dict[str, str]) -> None:
    """KEY=value lines that make, sh (set -a; .) and python-dotenv read alike; 0600, it holds the secret."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def up(env_file: Path | None = DEFAULT_ENV_FILE) -> tuple[dict[str, str], bool]:
    """Reuse the running radosgw or build a fresh one; its TEST_S3_* values and whether this call started it."""
    state = load_state()
    started = False
    if not running(state):
        stop(state)  # whatever is left of an earlier one
        ensure_installed()
        state = {"version": ceph_version()}
        try:
            create_cluster(state)
        except BaseException:
            stop(state)
            raise
        started = True
    values = env_values(state)
    if env_file is not None:
        write_env_file(env_file, values)
    return values, started


def down() -> list[str]:
    """Stop what `up` started and remove the cluster (its data is throwaway test data)."""
    state = load_state()
    stopped = stop(state)
    if state.get("base"):
        shutil.rmtree(state["base"], ignore_errors=True)
    STATE_FILE.unlink(missing_ok=True)
    return stopped


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; exit code 2 with one sentence on stderr on failure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up").add_argument("--env-file", type=Path, default=DEFAULT_ENV_FILE)
    sub.add_parser("down")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            began = time.monotonic()
            values, started = up(args.env_file)
            how = f"started in {time.monotonic() - began:.0f} s" if started else "already running"
            print(f"S3 server: radosgw {values['TEST_S3_VERSION']} at {values['TEST_S3_ENDPOINT_URL']} ({how}, "
                  f"pids {values['TEST_S3_PIDS']}, logs in {display(STATE_DIR / 'cluster' / 'log')})")
        else:
            stopped = down()
            print(f"radosgw stopped: {', '.join(stopped)}" if stopped else "No radosgw was running.")
    except RadosgwError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the contract is one sentence, never a traceback
        detail = " ".join(str(exc).split())
        print(f"radosgw.py {args.command} failed unexpectedly ({type(exc).__name__}: {detail}).", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
