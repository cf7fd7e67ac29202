"""S3 behind a network that resets and stalls connections, on upload and on download (issue 22, parts 4 and 6).

The worker and the restore command talk to the world's S3 through a TCP fault proxy (tests/servers/fault_proxy.py);
the test reads the bucket directly. Connections are reset mid-part (as a load balancer or NAT dropping a flow
does) and left silent past the read timeout (a black-holed route). The backup must end succeeded with exactly one
object and no multipart upload left open, and a verify drill reading through the same faults must pass.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest

from tests.servers.fault_proxy import FaultProxy

from .conftest import ROOT, World, past, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]

STALL_SECONDS = 14  # past the world's AWS_S3_READ_TIMEOUT (10 s)


@pytest.fixture
def proxy(chaos: World):
    endpoint = urlsplit(chaos.s3.endpoint_url)
    proxy = FaultProxy.start(endpoint.hostname, endpoint.port)
    yield proxy
    proxy.stop()


def test_resets_and_stalls_on_upload_and_download_lose_nothing(chaos: World, proxy: FaultProxy):
    through = {"AWS_S3_ENDPOINT_URL": proxy.url}
    since = chaos.last_record_id()
    chaos.beat("beat", s3=True)
    chaos.worker("w1", s3=True, env=through)
    # the next connections: two reset after 1 MiB of a part, one silent after its request, one reset again
    proxy.reset_after(1 << 20, connections=2)
    proxy.stall_after(0, seconds=STALL_SECONDS, connections=1)
    proxy.reset_after(3 << 20, connections=1)
    slot = chaos.make_due(["chaos_big"], past())
    started = time.monotonic()
    [record] = chaos.wait_finished(since, 1, timeout=240)
    chaos.note("S3 upload through 3 resets and a 14 s stall -> backup succeeded", time.monotonic() - started)
    assert record["status"] == "succeeded", record
    assert proxy.resets >= 2, (proxy.resets, proxy.stalls)
    wait_until(lambda: chaos.s3_open_uploads() == 0, "the failed attempts' uploads to be aborted", timeout=30,
               every=0.5)
    chaos.check_invariants(since=since, slots={"chaos_big": [slot]}, backend="s3")

    proxy.stall_after(2 << 20, seconds=STALL_SECONDS, connections=1)  # the drill's download stalls mid-body
    proxy.reset_after(0, connections=1)  # and its next connection is reset at once
    started = time.monotonic()
    drill = subprocess.run([sys.executable, "manage.py", "restore_tenant", "chaos_big", str(record["id"]),
                            "--verify-only", "--noinput"], cwd=ROOT,
                           env={**os.environ, **chaos.s3_env(), **through}, capture_output=True, text=True,
                           timeout=300)
    chaos.note("S3 download through a 14 s stall and a reset -> verify drill passed", time.monotonic() - started)
    assert drill.returncode == 0, drill.stdout[-2000:] + drill.stderr[-3000:]
    assert proxy.stalls >= 2, (proxy.resets, proxy.stalls)
    assert chaos.sql("SELECT status FROM backups_backuprecord WHERE id = %s", (record["id"],))[0][0] == "succeeded"
