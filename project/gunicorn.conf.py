"""gunicorn's settings for the web process (Procfile, docker-compose, `make web-prod`), from the environment.

Threaded workers (gthread): a download streams for as long as the client reads, since the worker's main
thread keeps telling the arbiter it is alive while request threads work, so `timeout` guards against a
hung worker without cutting long downloads; and a `create/?download=true` that waits for its backup holds
one thread, not a whole worker.
"""

import os

bind = os.environ.get("GUNICORN_BIND") or f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# gthread, with requests read by the worker's event loop before a thread runs them: slow clients hold no thread.
worker_class = "project.gunicorn_worker.BufferingThreadWorker"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
accesslog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
logger_class = "project.gunicorn_logging.RedactingLogger"  # signed download links are credentials: never logged
