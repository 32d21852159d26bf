"""The domain errors every app raises, and the error envelope they are rendered in.

Domain code raises subclasses of ``ApplicationError`` (a code, a message, details, an HTTP status);
``config.exceptions.api_exception_handler`` (the single DRF exception handler) renders them, and DRF's
own errors, as ``{"error": {"code": str, "message": str, "details": {}}}``. Expected client errors are
logged below ERROR (INFO, or WARNING for throttling/conflicts); a 5xx at ERROR with its traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from rest_framework import status

logger = logging.getLogger("config.errors")


class ApplicationError(Exception):
    """Base of every domain error. Subclasses set ``status_code`` and ``code``."""

    status_code: int = status.HTTP_400_BAD_REQUEST
    code: str = "application_error"
    default_message: str = "The request could not be processed."

    def __init__(self, message: str | None = None, *, code: str | None = None, details: dict | None = None):
        self.message = message or self.default_message
        if code:
            self.code = code
        self.details = details or {}
        super().__init__(self.message)


class InvalidInput(ApplicationError):
    status_code = 400
    code = "invalid_input"
    default_message = "Invalid input."


class NotAuthenticatedError(ApplicationError):
    status_code = 401
    code = "not_authenticated"
    default_message = "Authentication credentials were not provided or are invalid."


class PermissionDeniedError(ApplicationError):
    status_code = 403
    code = "permission_denied"
    default_message = "You do not have permission to perform this action."


class NotFoundError(ApplicationError):
    status_code = 404
    code = "not_found"
    default_message = "Not found."


class PayloadTooLarge(ApplicationError):
    status_code = 413
    code = "payload_too_large"

    def __init__(self, *, limit: int):
        super().__init__(f"The request body is larger than {limit} bytes.", details={"max_bytes": limit})


class ConflictError(ApplicationError):
    status_code = 409
    code = "conflict"
    default_message = "The request conflicts with the current state."


class DomainRuleError(ApplicationError):
    status_code = 422
    code = "domain_rule_violated"
    default_message = "The request breaks a domain rule."


class ThrottledError(ApplicationError):
    status_code = 429
    code = "throttled"
    default_message = "Too many requests."

    def __init__(self, message: str | None = None, *, retry_after: int, **kwargs):
        self.retry_after = max(1, int(retry_after))
        super().__init__(message, **kwargs)
        self.details.setdefault("retry_after", self.retry_after)


class DependencyUnavailable(ApplicationError):
    status_code = 503
    code = "dependency_unavailable"
    default_message = "A service this request depends on is unavailable."


def error_body(code: str, message: str, details: dict | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def encodable(value: Any) -> Any:
    """``value`` with every string UTF-8 encodable. Error messages may quote the input, and a JSON body
    can carry a lone surrogate (``"\\ud800"``) that only ``CharField`` refuses: a ``ChoiceField``'s
    "is not a valid choice" quoted it, and rendering the error failed (a 500). It is shown escaped."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {encodable(key): encodable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [encodable(item) for item in value]
    return value


def log_error(status_code: int, code: str, message: str, exc: BaseException | None = None) -> None:
    if status_code >= 500:
        logger.error("api_error", exc_info=exc, extra={"status": status_code, "code": code, "error": message})
    elif status_code in (409, 429):
        logger.warning("api_client_error", extra={"status": status_code, "code": code, "error": message})
    else:
        logger.info("api_client_error", extra={"status": status_code, "code": code, "error": message})
