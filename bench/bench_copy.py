"""A backup copied to a second S3 target (backups.backup.copy.copy_object) against boto3 piping the same object.

    python bench/run.py copy
    BENCH_COPY_MB=500 BENCH_REPEATS=3 python bench/run.py copy

The object is BENCH_COPY_MB (500) MB of incompressible bytes (a backup is compressed, often encrypted) in one
bucket of the tests' radosgw (scripts/radosgw.py up); the second target is another bucket on the same server
(one radosgw here: both directions share its disk and CPU, as two real servers would not). Each measured run is a
fresh Python process; its peak RSS is the kernel's VmHWM. Runs alternate their order.

1. copy     - `copy_object`: one GET streamed in 1 MiB reads, hashed, into `S3Storage.open_write` (16 MiB parts,
              one in flight while the next fills), committed only when size and SHA-256 match.
2. boto3    - `client.download_fileobj` (a thread) into an os.pipe, `client.upload_fileobj` from its read end, both
              with boto3's default TransferConfig (8 MiB parts, 10 requests in flight each way); no digest check.

Targets (issue 28): copy time <= 1.2 x boto3's in the same run, worker memory flat (peak RSS < 150 MiB).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SOURCE, TARGET = "tenant-backups-bench-copy-a", "tenant-backups-bench-copy-b"
KEY = "bench/copy-source.bin"
MB = 1_000_000
MiB = 1 << 20
COPY_MB = int(os.environ.get("BENCH_COPY_MB", "500"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
MAX_RATIO = 1.2
MAX_RSS_MB = 150
KINDS = {"copy": "copy_object (streamed, SHA-256 checked)", "boto3": "boto3 download_fileobj | pipe | upload_fileobj"}


def vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def storage(server: dict[str, str], bucket: str):
    from backups.storage.s3 import S3Storage

    return S3Storage(bucket=bucket, access_key_id=server["TEST_S3_ACCESS_KEY_ID"],
                     secret_access_key=server["TEST_S3_SECRET_ACCESS_KEY"], endpoint_url=server["TEST_S3_ENDPOINT_URL"],
                     addressing_style="path", part_size=16 * MiB, key_prefix="")


def copy_child(size: int, sha256: str) -> dict[str, Any]:
    from backups.backup.copy import copy_object

    server = json.loads(os.environ["BENCH_S3_SERVER"])
    source, target = storage(server, SOURCE), storage(server, TARGET)
    baseline = vm_kib("VmRSS")
    started = time.perf_counter()
    copy_object(source=source, target=target, key=KEY, size=size, sha256=sha256)
    seconds = time.perf_counter() - started
    stored = target.stat(KEY)
    target.delete(KEY)
    return {"seconds": seconds, "peak_kib": vm_kib("VmHWM"), "baseline_kib": baseline,
            "stored": stored.size if stored else 0}


def boto3_child(size: int, sha256: str) -> dict[str, Any]:
    import boto3
    from botocore.config import Config

    server = json.loads(os.environ["BENCH_S3_SERVER"])
    client = boto3.client("s3", endpoint_url=server["TEST_S3_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id=server["TEST_S3_ACCESS_KEY_ID"],
                          aws_secret_access_key=server["TEST_S3_SECRET_ACCESS_KEY"],
                          config=Config(s3={"addressing_style": "path"}))
    baseline = vm_kib("VmRSS")
    started = time.perf_counter()
    read_fd, write_fd = os.pipe()
    errors: list[BaseException] = []

    def download() -> None:
        try:
            with os.fdopen(write_fd, "wb") as out:
                client.download_fileobj(SOURCE, KEY, out)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=download)
    thread.start()
    with os.fdopen(read_fd, "rb") as pipe:
        client.upload_fileobj(pipe, TARGET, KEY)
    thread.join()
    if errors:
        raise errors[0]
    seconds = time.perf_counter() - started
    stored = client.head_object(Bucket=TARGET, Key=KEY)["ContentLength"]
    client.delete_object(Bucket=TARGET, Key=KEY)
    return {"seconds": seconds, "peak_kib": vm_kib("VmHWM"), "baseline_kib": baseline, "stored": stored}


def start_server() -> dict[str, str]:
    """The tests' radosgw (started if needed), both buckets emptied, the source object written once."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("radosgw_script", ROOT / "scripts" / "radosgw.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    values, _ = script.up()
    from tests.servers.radosgw import from_env

    server = from_env(values)
    for bucket in (SOURCE, TARGET):
        server.create_bucket(bucket)
        server.empty_bucket(bucket)
    print(f"bench_copy: radosgw {values['TEST_S3_VERSION']} at {values['TEST_S3_ENDPOINT_URL']}", flush=True)
    return values


def write_source(server: dict[str, str]) -> tuple[int, str]:
    """BENCH_COPY_MB MB of random bytes at KEY in the source bucket; (size, SHA-256)."""
    source = storage(server, SOURCE)
    digest = hashlib.sha256()
    block = os.urandom(MiB)
    size = COPY_MB * MB
    with source.open_write(KEY) as writer:
        left = size
        while left:
            data = block[:min(left, MiB)]
            digest.update(data)
            writer.write(data)
            left -= len(data)
        writer.commit()
    return size, digest.hexdigest()


def child(kind: str, size: int, sha256: str, server: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), kind, str(size), sha256], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "BENCH_S3_SERVER": json.dumps(server)})
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} failed ({proc.returncode}): {proc.stdout[-500:]} {proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def run() -> None:
    server = start_server()
    size, sha256 = write_source(server)
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    for index in range(REPEATS):
        for kind in (list(KINDS) if index % 2 == 0 else list(reversed(KINDS))):
            result = child(kind, size, sha256, server)
            assert result["stored"] == size, result
            runs[kind].append(result)
            print(f"  {index + 1}/{REPEATS} {kind:<6} {result['seconds']:6.2f} s  peak {result['peak_kib'] / 1024:.0f} "
                  "MiB", flush=True)
    print(f"\ncopy of a {COPY_MB} MB object between two buckets of radosgw on loopback (medians of {REPEATS})")
    print(f"{'':52}{'seconds':>9}{'MB/s':>8}{'peak RSS':>10}")
    medians = {}
    for kind, description in KINDS.items():
        seconds = statistics.median(r["seconds"] for r in runs[kind])
        peak = statistics.median(r["peak_kib"] for r in runs[kind]) / 1024
        medians[kind] = (seconds, peak)
        print(f"{description:52}{seconds:9.2f}{size / MB / seconds:8.1f}{peak:7.0f} MiB")
    ratio = medians["copy"][0] / medians["boto3"][0]
    print(f"{'PASS' if ratio <= MAX_RATIO else 'FAIL'}: copy vs boto3's pipe {ratio:.2f}x (target <= {MAX_RATIO}x)")
    print(f"{'PASS' if medians['copy'][1] < MAX_RSS_MB else 'FAIL'}: copy's peak RSS {medians['copy'][1]:.0f} MiB "
          f"< {MAX_RSS_MB} MiB")
    source = storage(server, SOURCE)
    source.delete(KEY)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] in KINDS:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
        os.environ.setdefault("DJANGO_DEBUG", "1")
        import django

        django.setup()
        kind, size, sha256 = sys.argv[1], int(sys.argv[2]), sys.argv[3]
        result = copy_child(size, sha256) if kind == "copy" else boto3_child(size, sha256)
        print(json.dumps(result), flush=True)
    else:
        run()
