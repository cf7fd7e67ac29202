"""A wrong setting stops the worker, or backup_tenant, with one sentence that names it."""

import os
import subprocess
import sys
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from backups.models import BackupRecord


@pytest.mark.parametrize(("env", "named"), [
    ({"BACKUPS_STORAGE": "s3", "AWS_STORAGE_BUCKET_NAME": ""}, "AWS_STORAGE_BUCKET_NAME"),
    ({"BACKUPS_STORAGE": "s3", "AWS_STORAGE_BUCKET_NAME": "bucket", "AWS_S3_ENDPOINT_URL": "http://127.0.0.1:9",
      "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}, "AWS_S3_ENDPOINT_URL"),
    ({"BACKUPS_STORAGE": "s3", "AWS_STORAGE_BUCKET_NAME": "bucket", "AWS_ACCESS_KEY_ID": "",
      "AWS_SECRET_ACCESS_KEY": "", "AWS_S3_ENDPOINT_URL": "http://127.0.0.1:9",
      "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent"}, "AWS_ACCESS_KEY_ID"),
    ({"BACKUPS_STORAGE": "supabase", "SUPABASE_URL": ""}, "SUPABASE_URL"),
    ({"BACKUPS_AGE_RECIPIENTS": "age1notakey"}, "BACKUPS_AGE_RECIPIENTS"),
])
def test_worker_refuses_to_start_with_a_bad_setting(env, named):
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "project", "worker", "-Q", "backups.dump", "-c", "1",
         "--without-mingle", "--without-gossip", "-n", "misconfigured@%h"],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120, cwd=settings.BASE_DIR,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("tenant-backups cannot start:")]
    assert len(lines) == 1 and named in lines[0]
    assert "Traceback" not in proc.stderr


def test_backup_tenant_refuses_a_bad_recipient_before_dumping(settings):
    settings.BACKUPS_AGE_RECIPIENTS = "age1notakey"
    count = BackupRecord.objects.count()
    with pytest.raises(CommandError, match="BACKUPS_AGE_RECIPIENTS"):
        call_command("backup_tenant", "clinica_demo", stdout=StringIO())
    assert BackupRecord.objects.count() == count


def test_backup_tenant_refuses_an_unknown_backend(settings):
    settings.BACKUPS_STORAGE = "dropbox"
    with pytest.raises(CommandError, match="BACKUPS_STORAGE"):
        call_command("backup_tenant", "clinica_demo", stdout=StringIO())
