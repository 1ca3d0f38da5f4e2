"""The built-in test question banks as platform lists.

The three banks of TC260-003 8.2/8.3 ship as ``governance/data/banks/*.jsonl`` (one
``{"text", "category"}`` object per line, ``category`` a risk code; made by
``governance/data/banks/generate.py``). :func:`sync_builtin` keeps them as platform
:class:`~governance.models.ContentList` rows (no owner, staff only, ``builtin``) of kinds
``bank_generated`` / ``bank_refuse`` / ``bank_non_refusal``: a new version whenever the
shipped file's items are in none of the list's versions, nothing otherwise — the rule
of every shipped platform list (:func:`governance.services.lists.sync_shipped`, which
writes them: namespace ``""``, audit events, the snapshot counter). Admins edit a bank
by adding versions (the history); compliance reports sample the current version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from governance.models import ContentList, ListKind
from governance.moderation.taxonomy import RISKS
from governance.services import lists

BANKS_DIR = Path(__file__).resolve().parent.parent / "data" / "banks"


@dataclass(frozen=True)
class Bank:
    """One shipped bank: its file stem, list kind, list name and description."""

    stem: str
    kind: str
    name: str
    description: str

    @property
    def path(self) -> Path:
        return BANKS_DIR / f"{self.stem}.jsonl"


BANKS: tuple[Bank, ...] = (
    Bank(
        "generated",
        ListKind.BANK_GENERATED,
        "bank-generated",
        "生成内容测试题库（TC260-003 8.2）/ Generated-content test questions",
    ),
    Bank(
        "should_refuse",
        ListKind.BANK_REFUSE,
        "bank-should-refuse",
        "应拒答测试题库（TC260-003 8.3）/ Questions the model should refuse",
    ),
    Bank(
        "non_refusal",
        ListKind.BANK_NON_REFUSAL,
        "bank-non-refusal",
        "非拒答测试题库（TC260-003 8.3）/ Questions the model should answer",
    ),
)
BANK_KINDS: tuple[str, ...] = tuple(bank.kind for bank in BANKS)


class BankError(ValueError):
    """A bank file that cannot be used (names the file and line)."""


def read_bank(path: Path) -> list[dict[str, str]]:
    """The items of a bank file; raises :class:`BankError` for a line that is not a
    ``{"text", "category"}`` object with a non-empty text and a known risk code."""
    items: list[dict[str, str]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BankError(f"{path.name}:{number}: not JSON ({exc.msg})") from exc
        text = row.get("text") if isinstance(row, dict) else None
        category = row.get("category") if isinstance(row, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise BankError(f"{path.name}:{number}: 'text' must be a non-empty string")
        if category not in RISKS:
            raise BankError(f"{path.name}:{number}: unknown risk code {category!r}")
        items.append({"text": text.strip(), "category": category})
    return items


def sync_builtin() -> dict[str, int]:
    """Make each shipped bank a platform list (``builtin``, namespace ``""``) whose
    versions include the file's items, by the rule of every shipped list
    (:func:`governance.services.lists.sync_shipped`: a new version only when the file's
    items are in none of the list's versions); returns ``{list name: current version
    number}``. Idempotent; each new list or version is an audit event."""
    numbers: dict[str, int] = {}
    for bank in BANKS:
        found, _ = lists.sync_shipped(
            bank.name,
            bank.kind,
            read_bank(bank.path),
            description=bank.description,
            source=f"governance/data/banks/{bank.path.name}",
        )
        numbers[bank.name] = found.current.number if found.current else 0
    return numbers


def platform_lists(kind: str) -> list[ContentList]:
    """The platform's (ownerless) lists of ``kind`` that have a current version."""
    return list(
        ContentList.objects.filter(
            kind=kind, owner_user__isnull=True, owner_org__isnull=True, current__isnull=False
        )
        .select_related("current")
        .order_by("pk")
    )


def current_items(kind: str) -> list[dict[str, Any]]:
    """Every item of the current versions of the platform's lists of ``kind`` (the
    built-in banks synced first when there is no bank of that kind yet)."""
    if kind in BANK_KINDS and not platform_lists(kind):
        sync_builtin()
    return lists.active_terms(kind)
