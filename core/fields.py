"""Model fields of our own."""

from __future__ import annotations

import json
from typing import Any

import orjson
from django.db import models
from django.db.models.fields.json import KeyTransform


def _dumps(value: Any) -> bytes | str:
    try:
        return orjson.dumps(value)
    except TypeError:  # what orjson does not take (non-string keys, huge ints): the standard encoder
        return json.dumps(value)


class FastJSONField(models.JSONField):
    """A ``JSONField`` that encodes and decodes with orjson: for big documents read and written on
    hot paths (a long call's word timings are thousands of objects; the standard library takes
    several times longer). Same column, same values; no custom encoder or decoder."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("encoder") or kwargs.get("decoder"):
            raise TypeError("FastJSONField takes no encoder or decoder")
        super().__init__(*args, **kwargs)

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value is None or (isinstance(expression, KeyTransform) and not isinstance(value, str)):
            return value
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        if not prepared:
            value = self.get_prep_value(value)
        if connection.vendor != "postgresql":
            return super().get_db_prep_value(value, connection, prepared=True)
        from psycopg.types.json import Jsonb

        return Jsonb(value, dumps=_dumps)
