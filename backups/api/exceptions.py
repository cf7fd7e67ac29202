"""One JSON error shape for the whole API: `{"detail": ...}`, or field errors for bad input."""

from __future__ import annotations

import logging

from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler

from backups.core.errors import BackupError
from backups.core.service_errors import ApiServiceError, RateLimited
from backups.storage import ObjectNotFound, StorageError, StorageTransientError

logger = logging.getLogger("backups.api")


def _service_error(exc: ApiServiceError) -> Response:
    data = {exc.field: [exc.detail]} if exc.field and exc.status_code == 400 else {"detail": exc.detail}
    response = Response(data, status=exc.status_code)
    if isinstance(exc, RateLimited):
        response["Retry-After"] = str(exc.wait)
    return response


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler, plus the backups' own errors: services' refusals, model validation, storage failures;
    anything else is logged and answered as a JSON 500."""
    if isinstance(exc, ApiServiceError):
        return _service_error(exc)
    if isinstance(exc, DjangoValidationError):
        exc = ValidationError(exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages})
    if isinstance(exc, RequestDataTooBig):  # the body is over DATA_UPLOAD_MAX_MEMORY_SIZE: the client's doing
        return Response({"detail": "Request body too large."}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, ObjectNotFound):
        return Response({"detail": "No stored backup object there."}, status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, StorageTransientError):
        logger.warning("backup storage unavailable: %s", exc)
        response = Response({"detail": "The backup storage is unavailable right now; try again in a minute."},
                            status=status.HTTP_503_SERVICE_UNAVAILABLE)
        response["Retry-After"] = "60"
        return response
    if isinstance(exc, StorageError):
        logger.error("backup storage error: %s", exc)
        return Response({"detail": "The backup storage refused the request; the operators have been told."},
                        status=status.HTTP_502_BAD_GATEWAY)
    if isinstance(exc, BackupError):
        logger.error("backup error in the API: %s", exc)
        return Response({"detail": str(exc)}, status=status.HTTP_502_BAD_GATEWAY)
    response = exception_handler(exc, context)
    if response is None:  # a bug, not bad input: logged with its traceback, answered in the API's shape
        view = context.get("view")
        logger.error("unexpected error in %s", type(view).__name__ if view else "the API", exc_info=exc)
        response = Response({"detail": "Internal error; the operators have been told."},
                            status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    return response
