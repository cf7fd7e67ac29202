"""gunicorn's access log without the signatures of signed local download links (bearer credentials)."""

from __future__ import annotations

from gunicorn.glogging import Logger

from backups.ops.observability import redact_signed_links


class RedactingLogger(Logger):
    """gunicorn's logger whose access lines (request line, path, query, referer) name a signed link's path only."""

    def atoms(self, resp, req, environ, request_time) -> dict:  # noqa: ANN001 - gunicorn's signature
        atoms = super().atoms(resp, req, environ, request_time)
        return {name: redact_signed_links(value) if isinstance(value, str) else value
                for name, value in atoms.items()}
