"""Parsing untrusted JSON request bodies without a 500 (shared by the gateway and the API).

Python's ``json.loads`` raises ``RecursionError`` on deeply nested input, decodes bytes
with ``surrogatepass`` and accepts ``\\ud800`` escapes, producing strings that can be
neither tokenized nor stored. :func:`parse_json` turns all of these into ``ValueError``.
It imports nothing from Django, so both sides can use it.
"""

from __future__ import annotations

import json
import re
from typing import Any

# A surrogate escape (\uD800-\uDFFF) in the raw body; only then is a full check needed.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(body: bytes, *, strict: bool = False) -> Any:
    """``json.loads`` that turns every way a body can be unparseable into ValueError.

    Refuses invalid UTF-8 (including encoded surrogates), nesting too deep to parse
    (``RecursionError`` in the decoder) and strings holding a lone surrogate; with
    ``strict``, also ``NaN`` and ``Infinity`` (as DRF's ``STRICT_JSON`` does).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the body is not valid UTF-8 ({exc.reason})") from exc
    try:
        value = json.loads(text, parse_constant=_no_constants if strict else None)
    except RecursionError as exc:
        raise ValueError("the JSON is nested too deeply") from exc
    if _SURROGATE_ESCAPE.search(body):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError("a string holds a lone UTF-16 surrogate") from exc
    return value
