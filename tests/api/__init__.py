"""API tests against the real stack: PostgreSQL, Redis, a Celery worker, loopback S3 and a live gunicorn."""
