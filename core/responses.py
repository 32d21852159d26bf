"""Fast JSON responses for hot paths: plain dicts/lists rendered by orjson (no serializer per row)."""

import orjson
from django.http import HttpResponse


def orjson_response(data, *, status: int = 200) -> HttpResponse:
    return HttpResponse(orjson.dumps(data), status=status, content_type="application/json")
