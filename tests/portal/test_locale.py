"""The English catalogs (the portal's and each sub-platform's): every string is
translated and the compiled ``.mo`` that Django loads says the same as the ``.po`` that
people edit."""

from __future__ import annotations

import ast
import gettext
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CATALOGS = {
    "portal": (ROOT / "portal/locale/en/LC_MESSAGES", 50),
    "datasets": (ROOT / "datasets/locale/en/LC_MESSAGES", 50),
    "governance": (ROOT / "governance/locale/en/LC_MESSAGES", 100),
}
LINES = r'((?:"[^\n]*"\n?)+)'
# A plural entry is checked by its singular form (msgstr[0]) and must have its plural.
ENTRY = re.compile(
    rf"(?:msgctxt {LINES})?msgid {LINES}(?:msgid_plural {LINES})?msgstr(?:\[0\])? {LINES}"
    rf"(?:msgstr\[1\] {LINES})?"
)


def entries(catalog: Path) -> dict[str, str]:
    def text(lines: str) -> str:
        return "".join(ast.literal_eval(line) for line in lines.splitlines())

    found = {}
    po = (catalog / "django.po").read_text("utf-8")
    for context, msgid, plural, msgstr, msgstr_plural in ENTRY.findall(po):
        key = f"{text(context)}\x04{text(msgid)}" if context else text(msgid)
        found[key] = text(msgstr) if not plural or text(msgstr_plural) else ""
    found.pop("", None)
    return found


@pytest.mark.parametrize("app", sorted(CATALOGS))
def test_english_catalog_is_complete_and_compiled(app):
    catalog, least = CATALOGS[app]
    po = entries(catalog)
    assert len(po) > least
    assert all(po.values()), [k for k, v in po.items() if not v]
    with (catalog / "django.mo").open("rb") as mo:
        compiled = gettext.GNUTranslations(mo)
    assert {key: translate(compiled, key) for key in po} == po


def translate(catalog: gettext.GNUTranslations, key: str) -> str:
    context, _, msgid = key.rpartition("\x04")
    return catalog.pgettext(context, msgid) if context else catalog.gettext(msgid)
