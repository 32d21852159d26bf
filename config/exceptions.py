"""One error envelope for every API error.

Every error response has the body ``{"error": {"code": str, "message": str, "details": {}}}``.
Domain code raises subclasses of ``ApplicationError``; DRF's own exceptions (validation,
authentication, permission, throttling, 404, 405, parse errors) are mapped into the same shape
by ``api_exception_handler``, the single DRF exception handler.

Django's request-level refusals raised while DRF reads a body are mapped too: a body over
``DATA_UPLOAD_MAX_MEMORY_SIZE`` is ``413 payload_too_large`` (``details.max_bytes``; the
``core.request_guards`` middleware normally answers it before any read), too many form fields or
files ``400 too_many_fields``, any other ``SuspiciousOperation`` ``400 bad_request`` (Django's own
answer outside DRF).

Expected client errors are logged below ERROR (INFO, or WARNING for throttling/conflicts);
unexpected exceptions are logged at ERROR with their traceback and answered with a 500 envelope.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent, TooManyFilesSent
from django.http import Http404, JsonResponse
from django.views import defaults
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_default_handler

from core.exceptions import (
    ApplicationError,
    InvalidInput,
    PayloadTooLarge,
    ThrottledError,
    encodable,
    error_body,
    log_error,
)


def _from_drf(exc: drf_exceptions.APIException) -> tuple[str, str, dict]:
    detail = exc.detail
    if isinstance(exc, drf_exceptions.ValidationError):
        details = detail if isinstance(detail, dict) else {"non_field_errors": detail}
        return "validation_error", _first_message(details) or "Invalid input.", details
    if isinstance(exc, drf_exceptions.Throttled):
        raw_wait = getattr(exc, "wait", None)  # set by DRF's Throttled.__init__ (missing from the stubs)
        wait = int(raw_wait) if raw_wait is not None else None
        message = "Too many requests." + (f" Retry in {wait} seconds." if wait else "")
        return "throttled", message, ({"retry_after": wait} if wait else {})
    if isinstance(detail, dict):
        # simplejwt's InvalidToken carries {"detail", "code", "messages"}.
        message = str(detail.get("detail", "")) or str(exc.default_detail)
        code = str(detail.get("code", "")) or _code_of(exc)
        extra = {k: v for k, v in detail.items() if k not in ("detail", "code")}
        return code, message, extra
    return _code_of(exc), str(detail), {}


def _code_of(exc: drf_exceptions.APIException) -> str:
    codes = exc.get_codes()
    return codes if isinstance(codes, str) else exc.default_code


def _first_message(details: Any) -> str | None:
    """The first human message in a nested DRF error structure, prefixed with its field."""
    if isinstance(details, dict):
        for field, value in details.items():
            inner = _first_message(value)
            if inner:
                return inner if field == "non_field_errors" else f"{field}: {inner}"
    elif isinstance(details, list):
        for value in details:
            inner = _first_message(value)
            if inner:
                return inner
    elif details:
        return str(details)
    return None


def _from_django_request_error(exc: SuspiciousOperation) -> ApplicationError:
    """Django refuses a request body it reads for DRF (``request.body``, ``request.POST``)."""
    if isinstance(exc, RequestDataTooBig):
        return PayloadTooLarge(limit=settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    if isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        return InvalidInput(
            str(exc),
            code="too_many_fields",
            details={
                "max_fields": settings.DATA_UPLOAD_MAX_NUMBER_FIELDS,
                "max_files": settings.DATA_UPLOAD_MAX_NUMBER_FILES,
            },
        )
    return InvalidInput("The request was refused as malformed.", code="bad_request")


def api_exception_handler(exc: Exception, context: dict) -> Response:
    """The DRF ``EXCEPTION_HANDLER``: renders every error in the envelope."""
    if isinstance(exc, SuspiciousOperation):
        exc = _from_django_request_error(exc)
    if isinstance(exc, ApplicationError):
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, ThrottledError) else None
        body = encodable(error_body(exc.code, exc.message, exc.details))
        log_error(exc.status_code, exc.code, body["error"]["message"])
        return Response(body, status=exc.status_code, headers=headers)

    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()

    response = drf_default_handler(exc, context)  # sets WWW-Authenticate / Retry-After headers
    if response is None:
        log_error(500, "internal_error", f"{type(exc).__name__}: {exc}", exc)
        return Response(
            error_body("internal_error", "An unexpected error occurred."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    assert isinstance(exc, drf_exceptions.APIException)  # DRF's handler answers for nothing else
    code, message, details = encodable(_from_drf(exc))
    log_error(response.status_code, code, message)
    response.data = error_body(code, message, details)
    return response


# --- Django-level handlers so that non-DRF errors under /api/ share the envelope ----------


def not_found_handler(request, exception=None):
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("not_found", f"No route for {request.path}."), status=404)
    return defaults.page_not_found(request, exception)


def server_error_handler(request):
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("internal_error", "An unexpected error occurred."), status=500)
    return defaults.server_error(request)
