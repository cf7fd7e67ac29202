"""Print the environment the test suite runs with: its own database, Redis database and storage folder.

Reads DATABASE_URL and REDIS_URL (as `scripts/services.py up` left them) and derives test-only ones,
so `make test` never touches the data `make demo` made.
"""

import os
from urllib.parse import urlsplit, urlunsplit


def with_path(url: str, path: str) -> str:
    """`url` with its path replaced."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def main() -> None:
    database = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tenant_backups")
    redis = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    name = os.environ.get("TEST_DATABASE_NAME", "tenant_backups_test")
    print(f"DATABASE_URL={with_path(database, '/' + name)}")
    print(f"REDIS_URL={with_path(redis, '/' + os.environ.get('TEST_REDIS_DB', '15'))}")
    print("BACKUPS_LOCAL_ROOT=var/test-backups")
    print("CELERY_QUEUE_PREFIX=tenant-backups-test.")
    print("CACHE_KEY_PREFIX=tenant-backups-test")
    print("BACKUPS_TASK_RETRY_DELAY=1")
    print(f"TEST_DATABASE_NAME={name}")


if __name__ == "__main__":
    main()
