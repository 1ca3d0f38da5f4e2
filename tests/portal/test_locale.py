"""The English catalog: every string is translated and the compiled ``.mo`` that Django
loads says the same as the ``.po`` that people edit."""

from __future__ import annotations

import ast
import gettext
import re
from pathlib import Path

CATALOG = Path(__file__).resolve().parents[2] / "portal/locale/en/LC_MESSAGES"
ENTRY = re.compile(
    r'(?:msgctxt ((?:"[^\n]*"\n)+))?msgid ((?:"[^\n]*"\n)+)msgstr ((?:"[^\n]*"\n?)+)'
)


def entries() -> dict[str, str]:
    def text(lines: str) -> str:
        return "".join(ast.literal_eval(line) for line in lines.splitlines())

    found = {}
    for context, msgid, msgstr in ENTRY.findall((CATALOG / "django.po").read_text("utf-8")):
        key = f"{text(context)}\x04{text(msgid)}" if context else text(msgid)
        found[key] = text(msgstr)
    found.pop("", None)
    return found


def test_english_catalog_is_complete_and_compiled():
    po = entries()
    assert len(po) > 50
    assert all(po.values()), [k for k, v in po.items() if not v]
    with (CATALOG / "django.mo").open("rb") as mo:
        compiled = gettext.GNUTranslations(mo)
    assert {key: translate(compiled, key) for key in po} == po


def translate(catalog: gettext.GNUTranslations, key: str) -> str:
    context, _, msgid = key.rpartition("\x04")
    return catalog.pgettext(context, msgid) if context else catalog.gettext(msgid)
