"""The API's request parsing: JSON that cannot crash a view.

DRF's own ``JSONParser`` lets a ``RecursionError`` (a body of 100,000 nested ``[``) escape
as a 500 and passes lone UTF-16 surrogates (``"\\ud800"``) on to the database, which
cannot store them. This parser answers both with DRF's ``ParseError`` (400).
"""

from __future__ import annotations

import codecs
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from portal.json_body import parse_json


class SafeJSONParser(JSONParser):
    """``application/json`` bodies, refused with 400 when malformed, nested too deeply,
    not UTF-8 or holding lone surrogates."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        if codecs.lookup(encoding).name != "utf-8":
            return super().parse(stream, media_type, parser_context)
        try:
            return parse_json(stream.read() if stream is not None else b"", strict=True)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc
