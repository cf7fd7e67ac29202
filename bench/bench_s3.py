"""Upload of a 500 MB tenant to a loopback S3 server through the project's pipeline, against
`pg_dump | zstd -3 -T1 > file` to a local disk, in the same run; plus the worker process's peak RSS.

The S3 server is moto's server mode on loopback (it keeps objects in memory). The project's figure is
`backup_run` in a fresh process (what a worker runs): dump, compress, hash, streaming multipart upload,
manifest object, HEAD to confirm the size.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import bench_pipeline as bp  # noqa: E402
from tests.servers.moto_s3 import MotoS3Server  # noqa: E402

BUCKET = "tenant-backups-bench"
MAX_RATIO = 1.05
MAX_RSS_MB = 150


def s3_overrides(endpoint: str) -> dict[str, object]:
    """Settings the pipeline child runs with: S3 on the loopback server."""
    return {"BACKUPS_STORAGE": "s3", "AWS_STORAGE_BUCKET_NAME": BUCKET, "AWS_S3_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_S3_REGION_NAME": "us-east-1",
            "AWS_S3_ADDRESSING_STYLE": "path"}


def run() -> None:
    """Build (or reuse) the 500 MB tenant, start moto, alternate tool and pipeline runs, print the figures."""
    bp.prepare_database()
    spec = next(s for s in bp.TENANTS if s.schema == "bench_large")
    data = bp.ensure_tenant(spec)
    print(f"bench_s3: {spec.schema}, {data.relation_bytes / bp.MB:.0f} MB on disk, "
          f"{'reused' if data.reused else 'built'}", flush=True)
    server = MotoS3Server.start()
    try:
        import boto3

        boto3.client("s3", endpoint_url=server.endpoint_url, aws_access_key_id="bench",
                     aws_secret_access_key="bench", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        overrides = s3_overrides(server.endpoint_url)
        tool, ours = [], []
        for index in range(bp.REPEATS):
            steps = [("tool", lambda i=index: bp.run_tool(spec.schema, i)),
                     ("s3 pipeline", lambda: bp.run_pipeline(spec.schema, overrides))]
            if index % 2:
                steps.reverse()
            for label, action in steps:
                result = bp.measured_run(f"{spec.schema} {index + 1}/{bp.REPEATS} {label}", action)
                (tool if label == "tool" else ours).append(result)
                if label != "tool":
                    server.reset()
                    boto3.client("s3", endpoint_url=server.endpoint_url, aws_access_key_id="bench",
                                 aws_secret_access_key="bench", region_name="us-east-1").create_bucket(Bucket=BUCKET)
    finally:
        server.stop()
    t_tool = statistics.median(r.seconds for r in tool)
    t_ours = statistics.median(r.seconds for r in ours)
    rss = max(r.python_rss_kib for r in ours) / 1024
    pg_rss = max(r.pg_dump_rss_kib for r in ours) / 1024
    ratio = t_ours / t_tool
    print(f"\n{'':34}{'seconds':>9}{'stored MB':>11}")
    for label, seconds, runs in (("pg_dump | zstd -3 -T1 > local file", t_tool, tool),
                                 ("pipeline -> S3 (loopback moto)", t_ours, ours)):
        print(f"{label:34}{seconds:9.2f}{statistics.median(r.size for r in runs) / bp.MB:11.1f}")
    print(f"ratio S3 pipeline / local tool: {ratio:.3f}")
    print(f"peak RSS: worker-side Python {rss:.0f} MiB, its pg_dump {pg_rss:.0f} MiB")
    print(f"{'PASS' if ratio <= MAX_RATIO else 'FAIL'}: S3 upload vs pg_dump | zstd to a local file "
          f"{ratio:.3f} <= {MAX_RATIO}")
    print(f"{'PASS' if rss < MAX_RSS_MB else 'FAIL'}: worker peak RSS {rss:.0f} MiB < {MAX_RSS_MB} MiB")


if __name__ == "__main__":
    run()
