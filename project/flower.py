"""`python -m project.flower [options]`: Flower for this project, with its /metrics behind the same login.

Flower 2.2 serves `/metrics` (Prometheus) to anyone, whatever `--basic-auth` says: the handler lacks the
`authenticated` guard every other page has. This launcher adds it, then starts `celery -A project flower`.
Credentials come from FLOWER_BASIC_AUTH (Flower reads its FLOWER_* variables itself), never from argv,
and an empty one refuses to start rather than serving a Flower nobody can log into.
"""

from __future__ import annotations

import os
import sys


def protect_metrics() -> None:
    """Make Flower's /metrics handler require the login like its other pages."""
    import tornado.web
    from flower.views import monitor

    if not getattr(monitor.Metrics.get, "_login_required", False):
        guarded = tornado.web.authenticated(monitor.Metrics.get)
        guarded._login_required = True
        monitor.Metrics.get = guarded


def main(argv: list[str]) -> int:
    if not os.environ.get("FLOWER_BASIC_AUTH", "").strip() and not os.environ.get("FLOWER_AUTH"):
        print("Flower needs FLOWER_BASIC_AUTH=user:password in the environment.", file=sys.stderr)
        return 2
    protect_metrics()
    from celery.bin.celery import main as celery_main

    sys.argv = ["celery", "-A", "project", "flower", *argv]
    return celery_main() or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
