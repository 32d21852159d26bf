"""Guards on what a request may carry, answered before any view runs.

``BodySizeLimitMiddleware``: a body over ``API_MAX_BODY_BYTES`` is a 413 before anything reads it.
Django's own limit (``DATA_UPLOAD_MAX_MEMORY_SIZE``, set from ``API_MAX_BODY_BYTES``) only applies
when a view reads ``request.body`` / ``request.POST``, and leaves file parts of a multipart body
unbounded. This middleware answers ``413 payload_too_large`` (``details.max_bytes``) for:

- a ``Content-Length`` over the limit, without reading a byte of the body;
- a chunked body (no ``Content-Length``) on a server that de-chunks it and marks the input
  terminated (``wsgi.input_terminated``: gunicorn, werkzeug): at most the limit plus one byte is
  read, and a body within the limit is handed to the view as an ordinary body with its
  ``Content-Length`` (without this Django, and DRF, would read such a body as empty).

A server that cannot tell where a chunked body ends (Django's runserver) gives Django an empty
body: nothing is read there. Behind a reverse proxy, set its body limit too (nginx
``client_max_body_size``): it stops an oversized upload before it reaches a worker.

``NulCharacterMiddleware``: a NUL character (``%00``) in the path is a 404. No id of ours can hold
one, and Postgres refuses it in any text value, so a lookup with it was a 500 (``DataError``)
wherever a path segment reaches a query unvalidated (``/api/fiches/%00`` and every route taking a
fiche id or call id). Query parameters and bodies go through serializers, whose ``CharField`` fields
already refuse it (a 400 naming the field).

Under ``/api/`` the answers are in the error envelope; elsewhere (the admin) plain text.
"""

from __future__ import annotations

import io

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from core.exceptions import ApplicationError, NotFoundError, PayloadTooLarge, error_body, log_error


def error_response(request: HttpRequest, error: ApplicationError) -> HttpResponse:
    log_error(error.status_code, error.code, error.message)
    response: HttpResponse
    if request.path.startswith("/api/"):
        response = JsonResponse(error_body(error.code, error.message, error.details), status=error.status_code)
    else:
        response = HttpResponse(error.message, status=error.status_code, content_type="text/plain; charset=utf-8")
    # Framed by its length: a client still sending a refused body can read the answer whole.
    response["Content-Length"] = str(len(response.content))
    return response


def _read_at_most(stream, limit: int) -> bytes:
    """Up to ``limit`` bytes of ``stream`` (fewer only at its end)."""
    chunks, size = [], 0
    while size < limit:
        chunk = stream.read(min(limit - size, 64 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


class BodySizeLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        meta = request.META
        declared = meta.get("CONTENT_LENGTH")
        if declared:
            try:
                length = int(declared)
            except ValueError:
                length = 0  # as Django: an unparsable Content-Length is no body
            if length > limit:
                return error_response(request, PayloadTooLarge(limit=limit))
        elif "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower() and meta.get("wsgi.input_terminated"):
            body = _read_at_most(meta["wsgi.input"], limit + 1)
            if len(body) > limit:
                return error_response(request, PayloadTooLarge(limit=limit))
            # The body as if it had come with its Content-Length: Django and DRF read it normally.
            meta["CONTENT_LENGTH"] = str(len(body))
            request._stream = io.BytesIO(body)  # what WSGIRequest reads its body from
        return self.get_response(request)


class NulCharacterMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "\x00" in request.path:
            return error_response(request, NotFoundError("No route for a path with a NUL character."))
        return self.get_response(request)
