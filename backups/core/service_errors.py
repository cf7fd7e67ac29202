"""Errors the API services raise; the API's exception handler turns each into its status and a JSON detail."""

from __future__ import annotations


class ApiServiceError(Exception):
    """A request the service refuses; `detail` is shown to the caller as is."""

    status_code = 400

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class InvalidInput(ApiServiceError):
    """Bad input (400): a malformed key, a value out of range."""

    status_code = 400


class NotFoundError(ApiServiceError):
    """Nothing of this tenant by that id or key (404); also what another tenant's object looks like."""

    status_code = 404


class ConflictError(ApiServiceError):
    """The object's state forbids the action (409): a backup already running, a record not finished."""

    status_code = 409


class RateLimited(ApiServiceError):
    """Too many manual backups (429); `wait` seconds until the next one is allowed."""

    status_code = 429

    def __init__(self, detail: str, *, wait: int) -> None:
        super().__init__(detail)
        self.wait = max(1, int(wait))
