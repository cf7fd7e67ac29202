"""The S3 settings the session's worker and the S3 tests share: one bucket on the session's S3 server."""

from __future__ import annotations

from tests.servers.radosgw import S3TestServer

S3_BUCKET = "tenant-backups-api-test"


def s3_env(server: S3TestServer) -> dict[str, str]:
    """AWS_* settings (as environment) pointing at the loopback server, with its throwaway keys."""
    return {"AWS_STORAGE_BUCKET_NAME": S3_BUCKET, "AWS_S3_ENDPOINT_URL": server.endpoint_url,
            "AWS_ACCESS_KEY_ID": server.access_key_id, "AWS_SECRET_ACCESS_KEY": server.secret_access_key,
            "AWS_S3_REGION_NAME": server.region, "AWS_S3_ADDRESSING_STYLE": "path", "AWS_S3_MAX_ATTEMPTS": "2"}


def reset_bucket(server: S3TestServer) -> None:
    """The package's bucket, empty (its worker's settings name it, so it cannot be a new one per test)."""
    server.create_bucket(S3_BUCKET)
    server.empty_bucket(S3_BUCKET)
