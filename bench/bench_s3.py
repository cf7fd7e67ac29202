"""S3 uploads on radosgw: the project's hand-written multipart writer against boto3's managed transfer.

    python bench/run.py s3                    # both parts below
    BENCH_S3_PARTS=upload python bench/run.py s3

The S3 server is the tests' radosgw (scripts/radosgw.py up: Ceph 16.2, one BlueStore OSD on a sparse
file, loopback), which stores to disk and checks signatures, so the figures include a real server's work.
Every measured run is a fresh Python process; its peak RSS is the kernel's VmHWM.

1. upload   - BENCH_S3_UPLOAD_MIB (512) MiB of incompressible bytes in 1 MiB writes, 16 MiB parts, through
              (a) `S3Storage.open_write` (backups/storage/s3.py: one part in flight while the next fills) and
              (b) `ManagedS3Writer` below: the same ObjectWriter interface fed to boto3's managed transfer
              (s3transfer's `upload` with a TransferConfig, as `client.upload_fileobj` does) through a
              bounded queue, at two concurrencies; plus an aborted upload of each, to check nothing is left.
2. pipeline - the 500 MB bench tenant (bench/bench_pipeline.py builds or reuses it) backed up by `backup_run`
              to S3 with each writer, next to `pg_dump | zstd -3 -T1 > file` on local disk in the same run.
"""

from __future__ import annotations

import io
import json
import os
import queue
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BUCKET = "tenant-backups-bench"
MiB = 1024 * 1024
PART_SIZE = 16 * MiB  # BACKUPS_S3_PART_SIZE's default
UPLOAD_MIB = int(os.environ.get("BENCH_S3_UPLOAD_MIB", "512"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
PARTS = os.environ.get("BENCH_S3_PARTS", "upload,pipeline").split(",")
MAX_RATIO = 1.05
MAX_RSS_MB = 150
# writer name -> (description, managed transfer's max_request_concurrency, or None for the hand-written one)
WRITERS: dict[str, tuple[str, int | None]] = {
    "handwritten": ("S3Storage.open_write (hand-written multipart)", None),
    "managed-1": ("boto3 managed transfer, 1 in flight", 1),
    "managed-2": ("boto3 managed transfer, 2 in flight", 2),
    "managed-10": ("boto3 managed transfer, boto3's default 10", 10),
}


# --------------------------------------------------------------------------- the managed-transfer writer


class _QueueReader(io.RawIOBase):
    """The read end of a bounded queue of byte chunks: what s3transfer reads the upload from."""

    def __init__(self, chunks: queue.Queue) -> None:
        super().__init__()
        self._chunks = chunks
        self._current = memoryview(b"")
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._current:
            if self._eof:
                return 0
            item = self._chunks.get()
            if item is None:
                self._eof = True
                return 0
            if isinstance(item, BaseException):
                raise item  # s3transfer fails the transfer and aborts its multipart upload
            self._current = memoryview(item)
        size = min(len(buffer), len(self._current))
        buffer[:size] = self._current[:size]
        self._current = self._current[size:]
        return size


class ManagedS3Writer:
    """An ObjectWriter (write / commit / abort) whose bytes go through boto3's managed transfer.

    s3transfer reads a non-seekable stream one part at a time, uploads parts on its own threads
    (at most `concurrency` requests and in-memory parts) and aborts the multipart upload on failure.
    """

    def __init__(self, storage: Any, key: str, object_key: str, concurrency: int) -> None:
        from boto3.s3.transfer import TransferConfig, create_transfer_manager

        self.key = key
        self.size = 0
        self._chunks: queue.Queue = queue.Queue(maxsize=4)  # 4 writes of up to 1 MiB waiting
        config = TransferConfig(multipart_threshold=storage.part_size, multipart_chunksize=storage.part_size,
                                max_concurrency=concurrency, use_threads=True)
        config.max_in_memory_upload_chunks = concurrency
        self._manager = create_transfer_manager(storage.client, config)
        reader = io.BufferedReader(_QueueReader(self._chunks), buffer_size=MiB)  # full reads, as s3transfer wants
        extra = {**storage.object_args(), **storage.checksum_args()}
        self._future = self._manager.upload(reader, storage.bucket, object_key, extra_args=extra)
        self._done = False

    def write(self, data: bytes) -> None:
        self._chunks.put(bytes(data))
        self.size += len(data)

    def commit(self) -> None:
        self._chunks.put(None)
        try:
            self._future.result()
        finally:
            self._done = True
            self._manager.shutdown()

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._chunks.put(RuntimeError("aborted"))
        try:
            self._future.result()
        except Exception:  # noqa: BLE001 - the upload is being thrown away
            pass
        self._manager.shutdown()

    def __enter__(self) -> ManagedS3Writer:
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is not None or not self._done:
            self.abort()


def use_writer(name: str) -> None:
    """Make S3Storage.open_write return the named writer in this process."""
    from backups.storage.s3 import S3Storage

    concurrency = WRITERS[name][1]
    if concurrency is not None:
        S3Storage.open_write = lambda self, key: ManagedS3Writer(self, key, self.object_key(key), concurrency)


# --------------------------------------------------------------------------- children (one measured run each)


def vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def s3_settings(server: dict[str, str]) -> dict[str, Any]:
    return {"BACKUPS_STORAGE": "s3", "AWS_STORAGE_BUCKET_NAME": BUCKET,
            "AWS_S3_ENDPOINT_URL": server["TEST_S3_ENDPOINT_URL"], "AWS_ACCESS_KEY_ID": server["TEST_S3_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": server["TEST_S3_SECRET_ACCESS_KEY"], "AWS_S3_REGION_NAME": "us-east-1",
            "AWS_S3_ADDRESSING_STYLE": "path", "BACKUPS_S3_PART_SIZE": PART_SIZE}


def upload_child(name: str, mib: int) -> None:
    """One timed upload of `mib` MiB, then one aborted upload; prints a JSON line."""
    from backups.storage.s3 import S3Storage

    server = json.loads(os.environ["BENCH_S3_SERVER"])
    settings = s3_settings(server)
    storage = S3Storage(bucket=BUCKET, access_key_id=settings["AWS_ACCESS_KEY_ID"],
                        secret_access_key=settings["AWS_SECRET_ACCESS_KEY"],
                        endpoint_url=settings["AWS_S3_ENDPOINT_URL"], addressing_style="path", part_size=PART_SIZE)
    use_writer(name)
    block = os.urandom(MiB)
    baseline = vm_kib("VmRSS")
    key = f"bench/{name}-{os.getpid()}.bin"
    started = time.perf_counter()
    with storage.open_write(key) as writer:
        for _ in range(mib):
            writer.write(block)
        writer.commit()
    seconds = time.perf_counter() - started
    peak = vm_kib("VmHWM")
    stored = storage.stat(key)
    storage.delete(key)

    with storage.open_write(f"bench/{name}-aborted.bin") as writer:
        for _ in range(3 * PART_SIZE // MiB + 1):
            writer.write(block)
        writer.abort()
    time.sleep(0.5)
    left = storage.client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    print(json.dumps({"seconds": seconds, "peak_kib": peak, "baseline_kib": baseline,
                      "stored": stored.size if stored else 0, "left_after_abort": len(left)}), flush=True)


def pipeline_child(name: str, schema: str) -> None:
    """bench/pipeline_child.py's measured backup_run, with the named writer behind S3Storage."""
    use_writer(name)
    from bench import pipeline_child as child

    sys.exit(child.main([schema, json.dumps(s3_settings(json.loads(os.environ["BENCH_S3_SERVER"])))]))


# --------------------------------------------------------------------------- the runner


def start_server() -> dict[str, str]:
    """The tests' radosgw (started if needed) and the bench bucket on it, emptied."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("radosgw_script", ROOT / "scripts" / "radosgw.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    values, _ = script.up()
    from tests.servers.radosgw import from_env

    server = from_env(values)
    server.create_bucket(BUCKET)
    server.empty_bucket(BUCKET)
    print(f"bench_s3: radosgw {values['TEST_S3_VERSION']} at {values['TEST_S3_ENDPOINT_URL']} "
          f"(pids {values['TEST_S3_PIDS']})", flush=True)
    return values


def child(args: list[str], server: dict[str, str], env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], cwd=ROOT, capture_output=True,
                          text=True, env={**(env or os.environ), "BENCH_S3_SERVER": json.dumps(server)})
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stdout[-500:]} {proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def bench_upload(server: dict[str, str]) -> None:
    from bench import bench_pipeline as bp

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in WRITERS}
    for index in range(REPEATS):
        order = list(WRITERS) if index % 2 == 0 else list(reversed(WRITERS))
        for name in order:
            bp.wait_for_quiet()  # the machine may be shared: start each run in a quiet moment
            result = child(["--upload-child", name, str(UPLOAD_MIB)], server)
            runs[name].append(result)
            print(f"  upload {index + 1}/{REPEATS} {name:<12} {result['seconds']:6.2f} s  "
                  f"peak {result['peak_kib'] / 1024:5.0f} MiB", flush=True)
    print(f"\nupload of {UPLOAD_MIB} MiB in 1 MiB writes, {PART_SIZE // MiB} MiB parts, radosgw on loopback "
          f"(medians of {REPEATS}):")
    print(f"{'writer':48}{'seconds':>9}{'MiB/s':>8}{'peak RSS':>10}{'over base':>11}{'left':>6}")
    for name, (description, _) in WRITERS.items():
        seconds = statistics.median(r["seconds"] for r in runs[name])
        peak = statistics.median(r["peak_kib"] for r in runs[name]) / 1024
        over = statistics.median(r["peak_kib"] - r["baseline_kib"] for r in runs[name]) / 1024
        left = max(r["left_after_abort"] for r in runs[name])
        ok = all(r["stored"] == UPLOAD_MIB * MiB for r in runs[name])
        print(f"{description:48}{seconds:9.2f}{UPLOAD_MIB / seconds:8.1f}{peak:8.0f} MiB{over:7.0f} MiB"
              f"{left:6d}{'' if ok else '  WRONG SIZE'}")


def bench_pipeline(server: dict[str, str]) -> None:
    from bench import bench_pipeline as bp

    bp.prepare_database()
    spec = next(s for s in bp.TENANTS if s.schema == "bench_large")
    data = bp.ensure_tenant(spec)
    print(f"bench_s3: {spec.schema}, {data.relation_bytes / bp.MB:.0f} MB on disk, "
          f"{'reused' if data.reused else 'built'}", flush=True)
    names = ["handwritten", "managed-2"]
    tool: list[Any] = []
    ours: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for index in range(REPEATS):
        steps = ["tool", *names] if index % 2 == 0 else [*reversed(names), "tool"]
        for label in steps:
            if label == "tool":
                tool.append(bp.measured_run(f"{spec.schema} {index + 1}/{REPEATS} tool",
                                            lambda i=index: bp.run_tool(spec.schema, i)))
                continue
            report = child(["--pipeline-child", label, spec.schema], server, env=bp.child_env())
            bp.RECORD_IDS.append(report["record_id"])
            ours[label].append(report)
            print(f"  {spec.schema} {index + 1}/{REPEATS} {label:<12} {report['seconds']:7.2f} s  "
                  f"peak {report['python_vmhwm_kib'] / 1024:5.0f} MiB", flush=True)
            from tests.servers.radosgw import from_env

            from_env(server).empty_bucket(BUCKET)
    bp.cleanup()
    t_tool = statistics.median(r.seconds for r in tool)
    dump_mb = statistics.median(r["plain_size"] for r in ours["handwritten"]) / bp.MB
    print(f"\n500 MB tenant backed up to radosgw (medians of {REPEATS}); pg_dump's output {dump_mb:.0f} MB")
    print(f"{'':48}{'seconds':>9}{'plain MB/s':>12}{'stored MB':>11}{'peak RSS':>10}")
    print(f"{'pg_dump | zstd -3 -T1 > local file':48}{t_tool:9.2f}{dump_mb / t_tool:12.1f}"
          f"{statistics.median(r.size for r in tool) / bp.MB:11.1f}")
    for name in names:
        seconds = statistics.median(r["seconds"] for r in ours[name])
        rss = statistics.median(r["python_vmhwm_kib"] for r in ours[name]) / 1024
        plain = statistics.median(r["plain_size"] for r in ours[name]) / bp.MB
        print(f"{WRITERS[name][0]:48}{seconds:9.2f}{plain / seconds:12.1f}"
              f"{statistics.median(r['size'] for r in ours[name]) / bp.MB:11.1f}{rss:6.0f} MiB")
    shipped = ours["handwritten"]
    ratio = statistics.median(r["seconds"] for r in shipped) / t_tool
    rss = max(r["python_vmhwm_kib"] for r in shipped) / 1024
    print(f"{'PASS' if ratio <= MAX_RATIO else 'FAIL'}: S3 upload vs pg_dump | zstd to a local file "
          f"{ratio:.3f} <= {MAX_RATIO}")
    print(f"{'PASS' if rss < MAX_RSS_MB else 'FAIL'}: worker peak RSS {rss:.0f} MiB < {MAX_RSS_MB} MiB")


def run() -> None:
    """Start (or reuse) radosgw, then the parts named in BENCH_S3_PARTS."""
    server = start_server()
    if "upload" in PARTS:
        bench_upload(server)
    if "pipeline" in PARTS:
        bench_pipeline(server)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--upload-child":
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
        upload_child(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--pipeline-child":
        pipeline_child(sys.argv[2], sys.argv[3])
    else:
        run()
