"""OpenAPI helpers: the error envelope component, per-status error responses, the JWT security
scheme of our cached JWT authentication, and the hook documenting the body-size 413."""

from django.conf import settings
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers


class CachedJWTScheme(SimpleJWTScheme):
    """``accounts.auth_cache.CachedJWTAuthentication`` is simplejwt's Bearer JWT."""

    target_class = "accounts.auth_cache.CachedJWTAuthentication"


ErrorEnvelope = inline_serializer(
    name="ErrorEnvelope",
    fields={
        "error": inline_serializer(
            name="ErrorBody",
            fields={
                "code": serializers.CharField(help_text="Machine-readable code, e.g. permission_denied."),
                "message": serializers.CharField(help_text="Human-readable message."),
                "details": serializers.DictField(help_text="Structured details (field errors, ...)."),
            },
        )
    },
)

_DESCRIPTIONS = {
    400: "Invalid input (`validation_error`, `invalid_input`, ...).",
    401: "Missing, invalid or expired token, or inactive user (`not_authenticated`, `token_not_valid`, ...).",
    403: "Authenticated but missing the required grant or scope (`permission_denied`, `scope_denied`).",
    404: "Not found (`not_found`).",
    409: "Conflicts with the current state (`conflict`, `role_in_use`, ...).",
    422: "Breaks a domain rule.",
    429: "Throttled (`throttled`); see the `Retry-After` header.",
    503: "A dependency is unavailable.",
}


def errors(*statuses: int) -> dict[int, OpenApiResponse]:
    return {s: OpenApiResponse(ErrorEnvelope, description=_DESCRIPTIONS[s]) for s in statuses}


def document_body_limit(result: dict, generator, request, public) -> dict:
    """Postprocessing hook: every operation that takes a body documents the 413 of a body over
    ``API_MAX_BODY_BYTES`` (``core.request_guards``)."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    response = {
        "description": f"Request body larger than {limit} bytes (`payload_too_large`, `details.max_bytes`).",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
    }
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict) and "requestBody" in operation:
                operation.setdefault("responses", {}).setdefault("413", response)
    return result
