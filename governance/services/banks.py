"""The built-in test question banks as platform lists.

The three banks of TC260-003 8.2/8.3 ship as ``governance/data/banks/*.jsonl`` (one
``{"text", "category"}`` object per line, ``category`` a risk code; made by
``governance/data/banks/generate.py``). :func:`sync_builtin` keeps them as platform
:class:`~governance.models.ContentList` rows (no owner, staff only, ``builtin``) of kinds
``bank_generated`` / ``bank_refuse`` / ``bank_non_refusal``: a new version whenever the
shipped file changed, nothing otherwise. Admins edit a bank by adding versions (the
history); compliance reports sample the current version.

The rows are written here with the models directly (the generic list service of
``governance.services.lists`` was not on main when this was written).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models import Max

from governance.models import ContentList, ContentListVersion, ListKind
from governance.moderation.taxonomy import RISKS
from governance.services import audit

BANKS_DIR = Path(__file__).resolve().parent.parent / "data" / "banks"
# The namespace of lists the platform owns (no owner user or organisation).
PLATFORM_NAMESPACE = "platform"


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


def items_sha256(items: list[dict[str, Any]]) -> str:
    """The digest of a version's items (canonical JSON), to tell whether they changed."""
    data = json.dumps(items, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()


def sync_builtin() -> dict[str, int]:
    """Make each shipped bank a platform list whose current version holds the file's
    items; returns ``{list name: current version number}``. Idempotent: an unchanged
    file adds no version. Each new list or version is an audit event."""
    return {bank.name: _sync_bank(bank, read_bank(bank.path)) for bank in BANKS}


def _sync_bank(bank: Bank, items: list[dict[str, str]]) -> int:
    digest = items_sha256(items)
    with transaction.atomic():
        found = (
            ContentList.objects.select_for_update()
            .filter(namespace=PLATFORM_NAMESPACE, name=bank.name)
            .first()
        )
        if found is None:
            found = ContentList.objects.create(
                namespace=PLATFORM_NAMESPACE,
                name=bank.name,
                kind=bank.kind,
                description=bank.description,
                builtin=True,
            )
            audit.record(
                "list.create",
                target_type="content_list",
                target_id=str(found.pk),
                data={"name": f"{PLATFORM_NAMESPACE}/{bank.name}", "kind": bank.kind},
            )
        current = found.current
        if current is not None and current.sha256 == digest:
            return current.number
        number = (found.versions.aggregate(n=Max("number"))["n"] or 0) + 1
        version = ContentListVersion.objects.create(
            content_list=found,
            number=number,
            items=items,
            item_count=len(items),
            sha256=digest,
            note=f"built-in bank governance/data/banks/{bank.path.name}",
        )
        found.current = version
        found.save(update_fields=["current", "updated_at"])
        audit.record(
            "list.version",
            target_type="content_list",
            target_id=str(found.pk),
            data={"name": f"{PLATFORM_NAMESPACE}/{bank.name}", "version": number},
        )
        return number


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
    lists = platform_lists(kind)
    if not lists and kind in BANK_KINDS:
        sync_builtin()
        lists = platform_lists(kind)
    return [item for found in lists for item in (found.current.items if found.current else [])]
