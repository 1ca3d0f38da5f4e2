"""The fingerprint of a generated text, shared by the gateway (which registers what it
generated) and ``/api/governance/verify`` (which looks a text up).

The text is NFC-normalised, line ends made ``\\n``, an explicit AI-generation notice on
its first or last non-empty line removed, and outer whitespace stripped: the same answer
copied with or without its explicit label, or pasted with other line ends, hashes alike.
Pure (no Django).
"""

from __future__ import annotations

import hashlib
import unicodedata

from governance.labels.explicit import DEFAULT_TEXT, _is_notice


def canonical_text(text: str, label_text: str = DEFAULT_TEXT) -> str:
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    lines = text.strip().split("\n")
    if lines and _is_notice(lines[0], label_text):
        lines = lines[1:]
    if lines and _is_notice(lines[-1], label_text):
        lines = lines[:-1]
    return "\n".join(lines).strip()


def text_sha256(text: str, label_text: str = DEFAULT_TEXT) -> str:
    """SHA-256 (hex) of :func:`canonical_text`."""
    return hashlib.sha256(canonical_text(text, label_text).encode()).hexdigest()
