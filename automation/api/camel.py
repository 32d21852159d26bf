"""The automation API speaks camelCase (the original front end's names); everything behind it reads
snake_case. The conversion happens here, at the edge, with ``djangorestframework-camel-case``, and only
for the automation views (the rest of the API keeps its own names):

- request bodies: ``CamelCaseJSONParser`` (ours: the library's ``underscoreize`` over
  ``core.parsers.JSONParser``, so a too-deep body stays a 400), the library's ``CamelCaseFormParser``
  and ``CamelCaseMultiPartParser``; query strings: ``underscoreize`` in the view;
- response bodies: ``CamelCaseJSONRenderer``, except the error envelope, which it leaves as it is:
  its ``details`` mix field names with context keys that are snake_case in every API
  (``schedule_id``, ``run_id``, ``retry_after``...). Field names in errors are put in the API's names
  by ``api_named_errors`` before the envelope is built (its message names the field the same way);
- the OpenAPI schema: serializers deriving from ``CamelCaseSerializer`` declare snake_case fields and
  are documented with camelCase property names (``CamelCaseSerializerExtension``, a drf-spectacular
  extension scoped to them: the library's ``camelize_serializer_fields`` hook would rename every
  component of the API).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from djangorestframework_camel_case.parser import CamelCaseFormParser, CamelCaseMultiPartParser  # type: ignore[import-untyped]
from djangorestframework_camel_case.render import CamelCaseJSONRenderer as LibraryCamelCaseJSONRenderer  # type: ignore[import-untyped]
from djangorestframework_camel_case.settings import api_settings as camel_settings  # type: ignore[import-untyped]
from djangorestframework_camel_case.util import camelize_re, underscore_to_camel, underscoreize  # type: ignore[import-untyped]
from drf_spectacular.extensions import OpenApiSerializerExtension
from rest_framework import serializers
from rest_framework.exceptions import ParseError, ValidationError

from core.exceptions import ApplicationError
from core.parsers import JSONParser


def api_name(name: str) -> str:
    """``fiche_selection.max_fiches`` → ``ficheSelection.maxFiches`` (the library's rule)."""
    return re.sub(camelize_re, underscore_to_camel, name) if "_" in name else name


# --- Requests --------------------------------------------------------------------------------------------


class CamelCaseJSONParser(JSONParser):
    """JSON bodies with camelCase keys read as snake_case: the library's ``underscoreize`` over our
    JSON parser (DRF's, with a body nested too deeply a 400 rather than a 500). The library's own
    ``CamelCaseJSONParser`` decodes with plain ``json.loads`` (NaN accepted, no depth guard)."""

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        try:
            return underscoreize(data, **camel_settings.JSON_UNDERSCOREIZE)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None


PARSER_CLASSES = [CamelCaseJSONParser, CamelCaseFormParser, CamelCaseMultiPartParser]


def snake_case_query(query: Any) -> Any:
    """A request's query parameters (``?isActive=``) under their snake_case names."""
    return underscoreize(query, **camel_settings.JSON_UNDERSCOREIZE)


# --- Responses -------------------------------------------------------------------------------------------


class CamelCaseJSONRenderer(LibraryCamelCaseJSONRenderer):
    """The library's renderer (keys camelized, values untouched), leaving the error envelope as built:
    ``ignore_fields`` keeps the value under an ``error`` key as it is (a run's ``error`` is a string
    or null, so only the envelope is concerned)."""

    json_underscoreize = {**camel_settings.JSON_UNDERSCOREIZE, "ignore_fields": ("error",)}


def _renamed(key: Any, fields: Collection[str]) -> Any:
    """A details key in the API's names when it names an input field (``fiche_selection.max_fiches``,
    ``notify_emails.1``); any other key (``schedule_id``, ``url``, ``non_field_errors``) as it is."""
    if not isinstance(key, str) or key.partition(".")[0] not in fields:
        return key
    return api_name(key)


def api_named_errors(exc: Exception, fields: Collection[str]) -> Exception:
    """``exc`` with the input fields it names (as ``details`` keys, and the message's ``field:``
    prefix) in the API's names, as the error envelope shows them. ``fields``: the snake_case names
    of the view's input fields. A DRF ``ValidationError``'s message is built later from its keys."""
    if isinstance(exc, ValidationError) and isinstance(exc.detail, Mapping):
        exc.detail = {_renamed(key, fields): value for key, value in exc.detail.items()}
    elif isinstance(exc, ApplicationError) and exc.details:
        renamed = {key: _renamed(key, fields) for key in exc.details}
        for key, new in renamed.items():
            if new != key and exc.message.startswith(f"{key}:"):
                exc.message = new + exc.message[len(key) :]
                break
        exc.details = {renamed[key]: value for key, value in exc.details.items()}
    return exc


# --- The schema ------------------------------------------------------------------------------------------


# A serializer of the automation API: snake_case fields, camelCase on the wire (the views' parsers and
# renderer) and in the OpenAPI schema (``CamelCaseSerializerExtension``). No docstring: drf-spectacular
# would make it the description of every subclass without one.
class CamelCaseSerializer(serializers.Serializer):
    pass


class CamelCaseSerializerExtension(OpenApiSerializerExtension):
    """Documents ``CamelCaseSerializer`` subclasses with camelCase property names; nested ones are
    components of their own and pass here too. Other serializers of the API are not touched."""

    target_class = CamelCaseSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        schema: dict[str, Any] = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        if "properties" in schema:
            schema["properties"] = {api_name(name): value for name, value in schema["properties"].items()}
        if "required" in schema:  # sorted, as drf-spectacular writes it
            schema["required"] = sorted(api_name(name) for name in schema["required"])
        return schema
