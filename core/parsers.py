"""Request parsers: DRF's, with the failures they let through turned into 400s."""

from __future__ import annotations

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser; a body nested deeper than the interpreter's recursion limit (``[[[[…``, a
    few kilobytes) is a 400 parse error. DRF's own catches only ``ValueError``, so the decoder's
    ``RecursionError`` became a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
