"""The S3 server the tests run against: Ceph's radosgw (the default, TEST_S3=radosgw) or moto (TEST_S3=moto).

radosgw checks signatures, presigned links' expiry and encryption headers, so tests of refusals can
fail; moto accepts any signature and never expires a link, and is only a fallback for machines where
radosgw cannot run (tests marked `radosgw` are then not run, and the summary says so).

`make test` starts radosgw with scripts/radosgw.py and passes its TEST_S3_* variables; a bare `pytest`
starts it through the same script and stops it (by pid) when the session ends. Either way a server
that does not start fails the session: it is never skipped.

Nothing here is specific to one server: buckets are made and emptied through the S3 API itself.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("radosgw", "moto")


def chosen_kind() -> str:
    """TEST_S3, radosgw unless set; anything else is refused in one sentence."""
    kind = (os.environ.get("TEST_S3") or "radosgw").strip().lower()
    if kind not in KINDS:
        raise RuntimeError(f"TEST_S3={kind!r} is not radosgw or moto.")
    return kind


@dataclass
class S3TestServer:
    """One running S3 server, its throwaway credentials and what it can do."""

    kind: str
    version: str
    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    region: str
    kms_key_id: str  # an aws:kms key id the server accepts
    storage_class: str  # a class other than STANDARD that the server accepts
    checks_signatures: bool
    pids: str = ""
    _stop: Callable[[], None] = field(default=lambda: None, repr=False)

    def describe(self) -> str:
        """'radosgw 16.2.15 at http://127.0.0.1:port', for the test summary."""
        return f"{self.kind} {self.version} at {self.endpoint_url}".replace("  ", " ")

    def client(self, **overrides: Any) -> Any:
        """A plain botocore S3 client on the server (path-style, SigV4), for looking behind a storage."""
        kwargs: dict[str, Any] = {"aws_access_key_id": self.access_key_id,
                                  "aws_secret_access_key": self.secret_access_key}
        kwargs.update(overrides)
        return botocore.session.get_session().create_client(
            "s3", region_name=self.region, endpoint_url=self.endpoint_url,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
            **kwargs,
        )

    def create_bucket(self, name: str) -> str:
        """Make `name` (empty) if it does not exist; returns it."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise
        return name

    def empty_bucket(self, name: str) -> None:
        """Abort every multipart upload and delete every object (and version) of `name`."""
        client = self.client()
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=name):
            for upload in page.get("Uploads", ()):
                client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        while keys := [{"Key": item["Key"]} for item in client.list_objects_v2(Bucket=name).get("Contents", ())]:
            client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})  # 1,000 a page
        versions = client.list_object_versions(Bucket=name)  # only a versioned bucket has any left
        doomed = [{"Key": item["Key"], "VersionId": item["VersionId"]}
                  for item in versions.get("Versions", []) + versions.get("DeleteMarkers", [])]
        if doomed:
            client.delete_objects(Bucket=name, Delete={"Objects": doomed[:1000], "Quiet": True})

    def delete_bucket(self, name: str) -> None:
        """Empty `name` and remove it."""
        self.empty_bucket(name)
        self.client().delete_bucket(Bucket=name)

    def stop(self) -> None:
        """Stop the server if this session started it (a server `make test` started keeps running)."""
        self._stop()


def load_radosgw_script() -> ModuleType:
    """scripts/radosgw.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("radosgw_script", ROOT / "scripts" / "radosgw.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def from_env(values: dict[str, str], stop: Callable[[], None] = lambda: None) -> S3TestServer:
    """The server described by scripts/radosgw.py's TEST_S3_* values."""
    return S3TestServer(
        kind="radosgw", version=values.get("TEST_S3_VERSION", ""), endpoint_url=values["TEST_S3_ENDPOINT_URL"],
        access_key_id=values["TEST_S3_ACCESS_KEY_ID"], secret_access_key=values["TEST_S3_SECRET_ACCESS_KEY"],
        region=values.get("TEST_S3_REGION", "us-east-1"), kms_key_id=values["TEST_S3_KMS_KEY_ID"],
        storage_class=values.get("TEST_S3_STORAGE_CLASS", "STANDARD_IA"), checks_signatures=True,
        pids=values.get("TEST_S3_PIDS", ""), _stop=stop,
    )


def start_radosgw() -> S3TestServer:
    """The radosgw `make test` started (TEST_S3_ENDPOINT_URL set), or one started now and stopped at the end."""
    if os.environ.get("TEST_S3_ENDPOINT_URL"):
        return from_env(dict(os.environ))
    script = load_radosgw_script()
    try:
        values, started = script.up(env_file=None)
    except script.RadosgwError as exc:
        raise RuntimeError(str(exc)) from None
    return from_env(values, stop=script.down if started else lambda: None)


def start_moto() -> S3TestServer:
    """moto's server in a subprocess, with throwaway keys (it accepts any)."""
    import moto

    from .moto_s3 import MotoS3Server

    server = MotoS3Server.start()
    return S3TestServer(
        kind="moto", version=moto.__version__, endpoint_url=server.endpoint_url,
        access_key_id="TEST" + secrets.token_hex(8).upper(), secret_access_key=secrets.token_urlsafe(30),
        region="us-east-1", kms_key_id="alias/backups-test-key", storage_class="STANDARD_IA",
        checks_signatures=False, pids=str(server.process.pid), _stop=server.stop,
    )


def start_s3_server(kind: str | None = None) -> S3TestServer:
    """Start (or find) the server TEST_S3 names; RuntimeError with one sentence if it cannot."""
    kind = kind or chosen_kind()
    return start_radosgw() if kind == "radosgw" else start_moto()
