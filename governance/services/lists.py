"""Versioned, category-tagged lists: lexicons, allow-lists and question banks.

A list's items live in immutable versions (``[{"text", "category"[, "weight"]}]``; a
weight, 0..1, only where it is not 1); every edit — a whole new item list, items added
or removed, an import — is a new version, so the versions are the history. Items are
kept unique per (text, category) and sorted by category, then text; a version's
``sha256`` is over that canonical form, so an edit that changes nothing makes no version.

Import formats (both UTF-8): text, one item per line ``text[<TAB>category[<TAB>weight]]``
(blank lines and comments — ``#`` then a space — skipped; a hashtag ``#term`` is an item);
CSV ``text,category[,weight]`` (a header row naming ``text``, ``term`` or ``question``
maps columns by name). Errors name their line. An item's text is one line (no tabs or
line breaks), at most :data:`MAX_TEXT` characters; its category a platform category (a
risk like ``A1_d``, a class like ``A1`` or a detector like ``PII_ID_CARD``), required
except in allow-lists.

Platform lists (no owner, ``namespace`` ``""``) are the staff's: the gateway's snapshot
compiles the lexicons and allow-lists among them (:func:`active_terms`);
:func:`sync_builtin` keeps the shipped ``governance/data/lexicons/*`` among them.
Every change is an audit event and moves the gateway's snapshot counter after commit.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max, QuerySet

from governance.models import ContentList, ContentListVersion, ListKind
from governance.moderation.lexicon import DATA_DIR, read_csv_terms, read_text_terms
from governance.moderation.taxonomy import is_known
from governance.services import audit
from governance.services.policies import bump_on_commit, check_owner, with_platform
from governance.services.scope import is_staff
from portal.errors import Conflict, PermissionDenied, PlatformError
from portal.models.ownership import Action

PLATFORM_NAMESPACE = ""  # no user or organisation can be called that
BUILTIN_PREFIX = "builtin-"
MAX_ITEMS = 200_000
MAX_TEXT = 2000
MAX_IMPORT_BYTES = 16 * 1024 * 1024
MAX_PROBLEMS = 20  # listed in one error; the count says how many more
FORMATS = ("txt", "csv")
TEXT_COLUMNS = ("text", "term", "question")
_FORBIDDEN = ("\t", "\n", "\r", "\x00")

Item = dict[str, Any]


class ItemsError(PlatformError):
    """Items that do not validate; ``problems`` = ``[(where, message)]`` where ``where``
    is ``"line 7"`` (an import) or ``"items[3].category"`` (a JSON list)."""

    code = "invalid_items"

    def __init__(self, problems: list[tuple[str, str]], *, param: str = "items") -> None:
        shown = "; ".join(f"{where}: {message}" for where, message in problems[:MAX_PROBLEMS])
        more = len(problems) - MAX_PROBLEMS
        if more > 0:
            shown += f"; and {more} more"
        super().__init__(shown, param=param)
        self.problems = problems


# --- tenancy ------------------------------------------------------------------------------


def visible_lists(user: Any, action: Action = "read") -> QuerySet[ContentList]:
    """The lists ``user`` may read (or ``"write"``): their own, their managed
    organisations', and for staff the platform's; the single tenancy filter."""
    result: QuerySet[ContentList] = with_platform(
        ContentList.objects.restrict(user, action), ContentList, user
    )
    return result


# --- items --------------------------------------------------------------------------------


def make_item(
    text: Any, category: Any = "", weight: Any = None, *, require_category: bool = True
) -> Item:
    """One validated item; ``ValueError`` with the reason otherwise."""
    if not isinstance(text, str):
        raise ValueError("text must be a string")
    text = text.strip()
    if not text:
        raise ValueError("text is empty")
    if len(text) > MAX_TEXT:
        raise ValueError(f"text is over {MAX_TEXT} characters")
    if any(ch in text for ch in _FORBIDDEN):
        raise ValueError("text must be one line without tabs")
    if category is None:
        category = ""
    if not isinstance(category, str):
        raise ValueError("category must be a string")
    category = category.strip()
    if category and not is_known(category):
        raise ValueError(
            f"unknown category '{category[:20]}' (a risk like A1_d, a class like A1 "
            "or a detector like PII_ID_CARD)"
        )
    if not category and require_category:
        raise ValueError("no category (give one, or a default category for the list)")
    item: Item = {"text": text, "category": category}
    value = _weight(weight)
    if value != 1.0:
        item["weight"] = value
    return item


def _weight(raw: Any) -> float:
    if raw is None or raw == "":
        return 1.0
    if isinstance(raw, bool):
        raise ValueError("weight must be a number from 0 to 1")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"weight '{str(raw)[:20]}' is not a number") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError("weight must be a number from 0 to 1")
    return value


def canonical(items: Iterable[Item]) -> list[Item]:
    """Unique per (text, category) — the first one kept — sorted by category, text."""
    unique: dict[tuple[str, str], Item] = {}
    for item in items:
        unique.setdefault((item["text"], item["category"]), item)
    return [unique[key] for key in sorted(unique, key=lambda k: (k[1], k[0]))]


def items_sha256(items: list[Item]) -> str:
    body = json.dumps(items, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def parse_items(
    raw: Any,
    *,
    default_category: str = "",
    require_category: bool = True,
    path: str = "items",
) -> list[Item]:
    """Items from a JSON value: a list of strings (the default category applies) or of
    ``{"text", "category"?, "weight"?}`` objects. ``ItemsError`` names each bad path."""
    if not isinstance(raw, list):
        raise ItemsError([(path, "must be a list")], param=path)
    if len(raw) > MAX_ITEMS:
        raise ItemsError([(path, f"has more than {MAX_ITEMS} items")], param=path)
    items: list[Item] = []
    problems: list[tuple[str, str]] = []
    for index, entry in enumerate(raw):
        where = f"{path}[{index}]"
        if isinstance(entry, str):
            entry = {"text": entry}
        if not isinstance(entry, dict):
            problems.append((where, "must be a string or an object"))
            continue
        unknown = sorted(str(k)[:20] for k in entry if k not in ("text", "category", "weight"))
        if unknown:
            problems.append((f"{where}.{unknown[0]}", "unknown field (text, category, weight)"))
            continue
        try:
            category = entry.get("category") or default_category
            items.append(
                make_item(
                    entry.get("text"),
                    category,
                    entry.get("weight"),
                    require_category=require_category,
                )
            )
        except ValueError as exc:
            problems.append((f"{where}.{_field_of(str(exc))}", str(exc)))
    if problems:
        raise ItemsError(problems, param=path)
    return canonical(items)


def _field_of(message: str) -> str:
    for name in ("category", "weight"):
        if name in message:
            return name
    return "text"


def import_items(
    data: bytes, fmt: str, default_category: str = "", *, require_category: bool = True
) -> list[Item]:
    """Items from an uploaded text (``fmt`` ``"txt"``) or CSV (``"csv"``) file, in the
    formats of the module docstring; ``ItemsError`` (400) lists the bad lines."""
    if fmt not in FORMATS:
        raise PlatformError("The format must be txt or csv.", code="invalid_format", param="format")
    if len(data) > MAX_IMPORT_BYTES:
        raise PlatformError(
            f"The file is over {MAX_IMPORT_BYTES // 2**20} MiB.", code="file_too_large"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ItemsError([(f"line {line}", "not UTF-8 text")], param="file") from None
    rows = _txt_rows(text) if fmt == "txt" else _csv_rows(text)
    items: list[Item] = []
    problems: list[tuple[str, str]] = []
    for line, fields in rows:
        if isinstance(fields, str):  # the reader's own complaint
            problems.append((f"line {line}", fields))
            continue
        try:
            category = fields[1] if len(fields) > 1 and fields[1].strip() else default_category
            weight = fields[2] if len(fields) > 2 else None
            items.append(make_item(fields[0], category, weight, require_category=require_category))
        except ValueError as exc:
            problems.append((f"line {line}", str(exc)))
        if len(items) > MAX_ITEMS:
            problems.append((f"line {line}", f"more than {MAX_ITEMS} items"))
            break
    if problems:
        raise ItemsError(problems, param="file")
    return canonical(items)


def _txt_rows(text: str) -> Iterator[tuple[int, list[str] | str]]:
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line and line != "#" and not line.startswith("# "):
            yield number, line.split("\t")


def _csv_rows(text: str) -> Iterator[tuple[int, list[str] | str]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    columns: list[int] | None = None
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield reader.line_num, f"not valid CSV ({exc})"
            return
        line, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        if columns is None and any(cell.strip().lower() in TEXT_COLUMNS for cell in row):
            columns = _header(row)
            continue
        if columns is None:
            columns = [0, 1, 2]
        yield line, [row[i] if 0 <= i < len(row) else "" for i in columns]


def _header(row: list[str]) -> list[int]:
    names = [cell.strip().lower() for cell in row]

    def find(*wanted: str) -> int:
        return next((i for i, name in enumerate(names) if name in wanted), -1)

    return [find(*TEXT_COLUMNS), find("category", "risk"), find("weight")]


def export_items(items: list[Item], fmt: str) -> bytes:
    """A version's items as a file :func:`import_items` reads back."""
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["text", "category", "weight"])
        for item in items:
            writer.writerow([item["text"], item["category"], _weight_text(item)])
        return out.getvalue().encode()
    lines = []
    for item in items:
        fields = [item["text"], item["category"], _weight_text(item)]
        while fields and not fields[-1]:
            fields.pop()
        lines.append("\t".join(fields))
    return ("\n".join(lines) + "\n").encode() if lines else b""


def _weight_text(item: Item) -> str:
    return f"{item['weight']:g}" if "weight" in item else ""


# --- lists and versions -------------------------------------------------------------------


def requires_category(kind: str) -> bool:
    """Every item of a lexicon or question bank is tagged; allow-list words need not be."""
    return kind != ListKind.ALLOW


def create_list(
    actor: Any,
    owner: Any,
    name: str,
    kind: str,
    *,
    description: str = "",
    default_category: str = "",
    items: Any = None,
    note: str = "",
    builtin: bool = False,
) -> ContentList:
    """A new list with its first version (``items``, possibly none). ``owner`` None is
    the platform (staff only; ``actor`` None is the platform itself). 403 unless
    ``actor`` may manage ``owner``; 400 for a bad kind, category or item; 409 when the
    name is taken."""
    _check_creator(actor, owner)
    if kind not in ListKind.values:
        raise PlatformError(f"Unknown list kind '{str(kind)[:30]}'.", param="kind")
    _check_category(default_category)
    parsed = parse_items(
        items or [], default_category=default_category, require_category=requires_category(kind)
    )
    row = ContentList(
        name=name,
        kind=kind,
        description=description,
        default_category=default_category,
        builtin=builtin,
        created_by=actor,
        namespace=PLATFORM_NAMESPACE,
    )
    if owner is not None:
        row.set_owner(owner)
    try:
        with transaction.atomic():
            row.save(force_insert=True)
            version = _save_version(actor, row, parsed, note or "created", number=1)
            audit.record(
                "list.create",
                actor=actor,
                org=row.owner_org,
                **_target(row),
                data={**_describe(row), "version": 1, "item_count": version.item_count},
            )
            bump_on_commit()
    except IntegrityError as exc:
        raise Conflict(
            f"A list '{row.namespace}/{name}' exists already.", code="name_taken", param="name"
        ) from exc
    return row


def _check_creator(actor: Any, owner: Any) -> None:
    if owner is None:
        if actor is not None and not is_staff(actor):
            raise PermissionDenied("Only staff manage the platform's lists.")
        return
    check_owner(actor, owner)


def _check_category(category: str) -> None:
    if category and not is_known(category):
        raise PlatformError(
            f"Unknown category '{category[:20]}'.", code="invalid_items", param="default_category"
        )


def new_version(
    actor: Any, content_list: ContentList, items: Any, note: str = ""
) -> ContentListVersion:
    """Replace the list's items (a JSON list, see :func:`parse_items`) by a new version
    that becomes current; the current version itself when nothing changed."""
    parsed = parse_items(
        items,
        default_category=content_list.default_category,
        require_category=requires_category(content_list.kind),
    )
    with transaction.atomic():
        locked = _locked(content_list)
        current = locked.current
        if current is not None and current.sha256 == items_sha256(parsed):
            return current
        before = {(i["text"], i["category"]) for i in (current.items if current else [])}
        after = {(i["text"], i["category"]) for i in parsed}
        number = (locked.versions.aggregate(n=Max("number"))["n"] or 0) + 1
        note = note or "edited"
        version = _save_version(actor, locked, parsed, note, number=number)
        audit.record(
            "list.version",
            actor=actor,
            org=locked.owner_org,
            **_target(locked),
            data={
                **_describe(locked),
                "version": number,
                "item_count": version.item_count,
                "added": len(after - before),
                "removed": len(before - after),
                "note": note,
                "sha256": version.sha256,
            },
        )
        bump_on_commit()
    content_list.current = version
    return version


def _save_version(
    actor: Any, content_list: ContentList, items: list[Item], note: str, *, number: int
) -> ContentListVersion:
    version = ContentListVersion.objects.create(
        content_list=content_list,
        number=number,
        items=items,
        item_count=len(items),
        sha256=items_sha256(items),
        note=note[:500],
        created_by=actor,
    )
    content_list.current = version
    content_list.save(update_fields=["current", "updated_at"])
    return version


def current_items(content_list: ContentList) -> list[Item]:
    current = content_list.current
    return list(current.items) if current is not None else []


def add_items(
    actor: Any, content_list: ContentList, items: Any, note: str = ""
) -> ContentListVersion:
    """A new version with ``items`` (strings or objects, see :func:`parse_items`) added;
    an item already there (same text and category) is kept as it was."""
    return change_items(actor, content_list, add=items, note=note)


def remove_items(
    actor: Any, content_list: ContentList, items: Any, note: str = ""
) -> ContentListVersion:
    """A new version without ``items``: a string removes every item with that text, an
    object ``{"text", "category"}`` only that pair. Items not in the list are ignored."""
    return change_items(actor, content_list, remove=items, note=note)


def change_items(
    actor: Any, content_list: ContentList, *, add: Any = None, remove: Any = None, note: str = ""
) -> ContentListVersion:
    """One new version with ``remove`` taken out, then ``add`` put in (see
    :func:`add_items` and :func:`remove_items`)."""
    added = parse_items(
        add if add is not None else [],
        default_category=content_list.default_category,
        require_category=requires_category(content_list.kind),
        path="add",
    )
    texts, pairs = _removals(remove if remove is not None else [])
    if not note:
        note = " and ".join(
            w for w, given in (("added", added), ("removed", texts | pairs)) if given
        )
    with transaction.atomic():
        locked = _locked(content_list)
        kept = [
            item
            for item in current_items(locked)
            if item["text"] not in texts and (item["text"], item["category"]) not in pairs
        ]
        version = new_version(actor, locked, kept + added, note)
    content_list.current = version
    return version


def _locked(content_list: ContentList) -> ContentList:
    """The list's row, locked until the transaction ends (edits based on the current
    version do not lose each other's changes)."""
    return (
        ContentList.objects.select_for_update(of=("self",))
        .select_related("current")
        .get(pk=content_list.pk)
    )


def _removals(items: Any) -> tuple[set[str], set[tuple[str, str]]]:
    if not isinstance(items, list) or len(items) > MAX_ITEMS:
        problem = ("remove", f"must be a list of at most {MAX_ITEMS} items")
        raise ItemsError([problem], param="remove")
    texts: set[str] = set()
    pairs: set[tuple[str, str]] = set()
    for index, entry in enumerate(items):
        if isinstance(entry, str):
            texts.add(entry.strip())
        elif isinstance(entry, dict) and isinstance(entry.get("text"), str):
            category = entry.get("category")
            if category is None:
                texts.add(entry["text"].strip())
            else:
                pairs.add((entry["text"].strip(), str(category).strip()))
        else:
            problem = (f"remove[{index}]", "must be a string or {text, category}")
            raise ItemsError([problem], param="remove")
    return texts, pairs


def import_into(
    actor: Any,
    content_list: ContentList,
    data: bytes,
    fmt: str,
    *,
    replace: bool = False,
    default_category: str = "",
    note: str = "",
) -> ContentListVersion:
    """Import a txt/csv file into a new version: its items added to the current ones,
    or (``replace``) instead of them. Lines without a category get ``default_category``,
    else the list's."""
    _check_category(default_category)
    imported = import_items(
        data,
        fmt,
        default_category or content_list.default_category,
        require_category=requires_category(content_list.kind),
    )
    note = note or f"imported {len(imported)} items ({fmt}{', replacing' if replace else ''})"
    with transaction.atomic():
        locked = _locked(content_list)
        base = [] if replace else current_items(locked)
        version = new_version(actor, locked, base + imported, note)
    content_list.current = version
    return version


def delete_list(actor: Any, content_list: ContentList) -> None:
    """Delete a list and its history; a built-in list cannot be deleted (409: empty it
    with a new version instead)."""
    if content_list.builtin:
        raise Conflict(
            "A built-in list cannot be deleted; save an empty version instead.", code="builtin"
        )
    with transaction.atomic():
        audit.record(
            "list.delete",
            actor=actor,
            org=content_list.owner_org,
            **_target(content_list),
            data=_describe(content_list),
        )
        content_list.delete()
        bump_on_commit()


def active_terms(kind: str) -> list[Item]:
    """The current items of every platform list of ``kind`` (``lexicon`` or ``allow`` for
    the gateway's snapshot, a bank kind for compliance reports), oldest list first."""
    rows = (
        ContentList.objects.filter(
            owner_user__isnull=True, owner_org__isnull=True, kind=kind, current__isnull=False
        )
        .order_by("pk")
        .values_list("current__items", flat=True)
    )
    return [item for items in rows for item in items]


def _target(row: ContentList) -> dict[str, str]:
    return {"target_type": "list", "target_id": str(row.pk)}


def _describe(row: ContentList) -> dict[str, Any]:
    return {"namespace": row.namespace, "name": row.name, "kind": row.kind}


# --- the shipped lexicons -----------------------------------------------------------------


def builtin_files(directory: Path = DATA_DIR) -> list[tuple[str, str, list[Item]]]:
    """``(list name, kind, items)`` of every shipped lexicon file: ``allow*.txt`` are
    allow-lists, other ``*.tsv``/``*.txt``/``*.csv`` lexicons (the first-wave format)."""
    found: list[tuple[str, str, list[Item]]] = []
    for path in sorted(directory.iterdir()):
        lines = path.read_text(encoding="utf-8-sig").splitlines()
        if path.name.startswith("allow") and path.suffix == ".txt":
            words = (line.split("#", 1)[0].strip() for line in lines)
            items = [make_item(w, require_category=False) for w in words if w]
            found.append((BUILTIN_PREFIX + path.stem, ListKind.ALLOW, canonical(items)))
        elif path.suffix in (".tsv", ".txt", ".csv"):
            read = read_csv_terms if path.suffix == ".csv" else read_text_terms
            terms = read(lines, source=path.name)
            items = [make_item(t.text, t.category, t.weight) for t in terms]
            found.append((BUILTIN_PREFIX + path.stem, ListKind.LEXICON, canonical(items)))
    return found


def sync_builtin(directory: Path = DATA_DIR) -> list[str]:
    """Keep the shipped lexicons as platform lists (``builtin``, staff only), each by
    :func:`sync_shipped`; the names of the lists created or given a new version."""
    return [
        name for name, kind, items in builtin_files(directory) if sync_shipped(name, kind, items)[1]
    ]


def sync_shipped(
    name: str, kind: str, items: list[Item], *, description: str = "", source: str = ""
) -> tuple[ContentList, bool]:
    """Keep ``items`` (shipped with the code, from the file ``source``) as the platform
    list ``name`` (``builtin``, staff only): created when missing; given a new version
    only when these items are in none of its versions yet (so a staff edit stands until
    the shipped file changes). The one rule for every shipped list — the lexicons here,
    the question banks in ``governance.services.banks``; returns the list and whether
    it changed."""
    parsed = parse_items(items, require_category=requires_category(kind))
    shipped = f"shipped {source}".strip()
    row = _platform_named(name).first()
    if row is None:
        try:
            row = create_list(
                None,
                None,
                name,
                kind,
                description=description,
                items=parsed,
                note=shipped,
                builtin=True,
            )
        except Conflict:  # another process synced it meanwhile
            return _platform_named(name).get(), False
        return row, True
    if row.versions.filter(sha256=items_sha256(parsed)).exists():
        return row, False
    new_version(None, row, parsed, f"shipped file changed {source}".strip())
    return row, True


def _platform_named(name: str) -> QuerySet[ContentList]:
    return ContentList.objects.filter(
        namespace=PLATFORM_NAMESPACE, name=name, owner_user=None, owner_org=None
    )
