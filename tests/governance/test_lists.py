"""Versioned, category-tagged lists (``/api/governance/lists/``): create, edit (every edit
a new version), history, add/remove items, import from text or CSV with line-numbered
errors, export that imports back, tenancy (an outsider gets 404, platform lists are
staff-only), the audit trail, and the shipped lexicons synced as platform lists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from governance.models import AuditEvent, ContentList
from governance.moderation.lexicon import Lexicon, Term, default_lexicon
from governance.services import lists

LISTS = "/api/governance/lists/"
TERMS = [
    {"text": "颠覆国家政权", "category": "A1_a"},
    {"text": "赌博网站", "category": "A1_h", "weight": 0.8},
]


def create(actor: Any, **body: Any) -> Any:
    given = {"name": "words", "kind": "lexicon", **body}
    return actor.client().post(LISTS, given, format="json")


def actions_for(pk: Any) -> list[str]:
    rows = AuditEvent.objects.filter(target_type="list", target_id=str(pk)).order_by("id")
    return list(rows.values_list("action", flat=True))


def upload(actor: Any, pk: int, content: bytes, name: str = "terms.txt", **form: Any) -> Any:
    file = SimpleUploadedFile(name, content, content_type="application/octet-stream")
    return actor.client().post(f"{LISTS}{pk}/import", {"file": file, **form}, format="multipart")


# --- create, versions, history -----------------------------------------------------------


def test_every_edit_is_a_new_version_and_the_history_keeps_them_all(owner: Any) -> None:
    client = owner.client()
    # given a lexicon with two terms
    response = create(owner, items=TERMS, default_category="A1_h")
    assert response.status_code == 201, response.content
    body = response.json()
    pk = body["id"]
    assert (body["owner"], body["version"], body["item_count"]) == ("olivia", 1, 2)
    # when a term is added (a bare string takes the default category) and one removed
    response = client.post(
        f"{LISTS}{pk}/items", {"add": ["网络赌场"], "remove": ["颠覆国家政权"]}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["number"] == 2
    # and the whole list is replaced
    replaced = [{"text": "only", "category": "A2_a"}]
    response = client.post(
        f"{LISTS}{pk}/versions/", {"items": replaced, "note": "start over"}, format="json"
    )
    assert response.status_code == 201 and response.json()["number"] == 3
    # then the history lists three versions, newest first, each with its items
    history = client.get(f"{LISTS}{pk}/versions/").json()["results"]
    assert [(v["number"], v["item_count"], v["note"]) for v in history] == [
        (3, 1, "start over"),
        (2, 2, "added and removed"),
        (1, 2, "created"),
    ]
    v2 = client.get(f"{LISTS}{pk}/versions/2/").json()["items"]
    assert v2 == [
        {"text": "网络赌场", "category": "A1_h"},
        {"text": "赌博网站", "category": "A1_h", "weight": 0.8},
    ]
    assert client.get(f"{LISTS}{pk}/versions/1/").json()["items"][0]["text"] == "颠覆国家政权"
    assert client.get(f"{LISTS}{pk}/").json()["version"] == 3
    # and each change is in the audit log
    assert actions_for(pk) == ["list.create", "list.version", "list.version"]
    event = AuditEvent.objects.filter(action="list.version").order_by("id").first()
    assert event is not None and (event.data["added"], event.data["removed"]) == (1, 1)


def test_an_edit_that_changes_nothing_makes_no_version(owner: Any) -> None:
    pk = create(owner, items=TERMS).json()["id"]
    response = owner.client().post(f"{LISTS}{pk}/items", {"add": [TERMS[0]]}, format="json")
    assert response.json()["number"] == 1
    assert actions_for(pk) == ["list.create"]


def test_invalid_items_are_a_400_naming_each_path(owner: Any) -> None:
    items = [{"text": "ok", "category": "A1_a"}, {"text": "x", "category": "Z9"}, 7, "bare"]
    items.append({"text": "w", "category": "A1_a", "weight": 3})
    response = create(owner, items=items)
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "items[1].category: unknown category 'Z9'" in detail
    assert "items[2]: must be a string or an object" in detail
    assert "items[3].category: no category" in detail
    assert "items[4].weight" in detail
    assert not ContentList.objects.exists()
    # an unknown kind or default category is named too
    assert create(owner, kind="blacklist").status_code == 400
    response = create(owner, default_category="nope")
    assert response.status_code == 400 and response.json()["param"] == "default_category"


def test_allow_lists_need_no_category(owner: Any) -> None:
    response = create(owner, kind="allow", items=["平台独立", "东突然"])
    assert response.status_code == 201, response.content
    assert response.json()["item_count"] == 2


def test_deleting_a_list_is_audited_and_builtin_lists_cannot_be_deleted(
    owner: Any, admin: Any
) -> None:
    pk = create(owner).json()["id"]
    assert owner.client().delete(f"{LISTS}{pk}/").status_code == 204
    assert actions_for(pk) == ["list.create", "list.delete"]
    lists.sync_builtin()
    builtin = ContentList.objects.filter(builtin=True).first()
    assert builtin is not None
    response = admin.client().delete(f"{LISTS}{builtin.pk}/")
    assert response.status_code == 409 and response.json()["code"] == "builtin"


# --- import and export -------------------------------------------------------------------


def test_text_import_adds_items_and_reports_every_bad_line(owner: Any) -> None:
    pk = create(owner, items=TERMS[:1]).json()["id"]
    good = "# gambling terms\n网络赌场\tA1_h\n\n代开发票\tA1_h\t0.4\n".encode()
    # when a file with a bad category on line 2 and a bad weight on line 4 is imported
    bad = "网络赌场\tA1_h\n赌\tA1_zz\n\n代开发票\tA1_h\theavy\n".encode()
    response = upload(owner, pk, bad)
    # then nothing is saved and each line is named
    assert response.status_code == 400
    error = response.json()
    assert error["code"] == "invalid_items" and error["param"] == "file"
    assert "line 2: unknown category 'A1_zz'" in error["detail"]
    assert "line 4: weight 'heavy' is not a number" in error["detail"]
    assert ContentList.objects.get(pk=pk).current.number == 1
    # when the good file is imported
    response = upload(owner, pk, good)
    assert response.status_code == 201, response.content
    # then its items are added to the current ones
    items = owner.client().get(f"{LISTS}{pk}/versions/2/").json()["items"]
    assert [(i["text"], i.get("weight", 1)) for i in items] == [
        ("颠覆国家政权", 1),  # sorted by category (A1_a, A1_h), then text
        ("代开发票", 0.4),
        ("网络赌场", 1),
    ]


def test_csv_import_with_header_default_category_and_replace(owner: Any) -> None:
    pk = create(owner, items=TERMS).json()["id"]
    content = 'category,text\nA1_h,"赌博, 网站"\n,无类别词\n'.encode()
    response = upload(owner, pk, content, "terms.csv", replace="true", default_category="A2_a")
    assert response.status_code == 201, response.content
    items = owner.client().get(f"{LISTS}{pk}/versions/2/").json()["items"]
    assert items == [
        {"text": "赌博, 网站", "category": "A1_h"},
        {"text": "无类别词", "category": "A2_a"},
    ]


def test_csv_import_errors_name_the_physical_line(owner: Any) -> None:
    pk = create(owner).json()["id"]
    content = b'text,category\n"two\nlines",A1_a\nfine,A1_a\nbroken,\n'
    response = upload(owner, pk, content, "x.csv")
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "line 2: text must be one line" in detail and "line 5: no category" in detail


def test_import_refuses_non_utf8_and_names_the_line(owner: Any) -> None:
    pk = create(owner).json()["id"]
    response = upload(owner, pk, "好\tA1_a\n".encode() + "坏\tA1_a\n".encode("gbk"))
    assert response.status_code == 400
    assert response.json()["detail"] == "line 2: not UTF-8 text"


def test_export_reads_back_as_the_same_items(owner: Any) -> None:
    items = [*TERMS, {"text": 'quote "and", comma', "category": "A2_b"}]
    pk = create(owner, items=items, name="round").json()["id"]
    client = owner.client()
    for fmt, kind in (("txt", "text/plain"), ("csv", "text/csv")):
        response = client.get(f"{LISTS}{pk}/versions/1/export", {"format": fmt})
        assert response.status_code == 200, response.content
        assert response["Content-Type"].startswith(kind)
        assert f'filename="round-v1.{fmt}"' in response["Content-Disposition"]
        assert lists.import_items(response.content, fmt) == lists.canonical(
            lists.parse_items(items)
        )
    by_accept = client.get(f"{LISTS}{pk}/versions/1/export", HTTP_ACCEPT="text/csv")
    assert by_accept["Content-Type"].startswith("text/csv")
    assert client.get(f"{LISTS}{pk}/versions/1/export")["Content-Type"].startswith("text/plain")
    missing = client.get(f"{LISTS}{pk}/versions/9/export", {"format": "csv"})
    assert missing.status_code == 404 and missing["Content-Type"] == "application/json"
    assert client.get(f"{LISTS}{pk}/versions/1/export", {"format": "xml"}).status_code == 400


# --- tenancy -----------------------------------------------------------------------------


def test_outsider_gets_404_for_another_owners_list(owner: Any, org: Any, outsider: Any) -> None:
    pk = create(owner, owner="acme-lab", items=TERMS).json()["id"]
    client = outsider.client()
    assert client.get(LISTS).json()["results"] == []
    for url in (f"{LISTS}{pk}/", f"{LISTS}{pk}/versions/", f"{LISTS}{pk}/versions/1/"):
        assert client.get(url).status_code == 404, url
    assert client.get(f"{LISTS}{pk}/versions/1/export").status_code == 404
    assert client.post(f"{LISTS}{pk}/items", {"add": ["x"]}, format="json").status_code == 404
    assert upload(outsider, pk, b"x\tA1_a\n").status_code == 404
    assert client.delete(f"{LISTS}{pk}/").status_code == 404
    assert create(outsider, owner="acme-lab").status_code == 403
    assert ContentList.objects.get(pk=pk).current.number == 1


def test_platform_lists_are_staff_only(owner: Any, admin: Any) -> None:
    # a user may not create a platform list
    response = create(owner, platform=True)
    assert response.status_code == 403
    # staff may, and only staff see it
    response = create(admin, platform=True, name="global", items=TERMS)
    assert response.status_code == 201, response.content
    pk = response.json()["id"]
    assert response.json()["owner"] is None
    assert owner.client().get(f"{LISTS}{pk}/").status_code == 404
    create(admin, name="own")
    listed = admin.client().get(LISTS, {"platform": True}).json()["results"]
    assert [row["name"] for row in listed] == ["global"]
    listed = admin.client().get(LISTS, {"platform": False}).json()["results"]
    assert [row["name"] for row in listed] == ["own"]
    assert lists.active_terms("lexicon") == lists.canonical(lists.parse_items(TERMS))


def test_staff_who_are_not_superusers_see_platform_lists(owner: Any) -> None:
    from tests.conftest import make_actor

    staff = make_actor("stella", is_staff=True)
    lists.create_list(None, None, "global", "lexicon", items=TERMS)
    create(owner)
    names = [row["name"] for row in staff.client().get(LISTS).json()["results"]]
    assert names == ["global"]


# --- the shipped lexicons ----------------------------------------------------------------


def test_sync_builtin_is_idempotent_and_matches_the_shipped_lexicon(
    db: Any, tmp_path: Path
) -> None:
    # when the shipped lexicons are synced twice
    first = lists.sync_builtin()
    second = lists.sync_builtin()
    # then the lists were created once, owned by nobody, built in
    assert first and second == []
    rows = ContentList.objects.filter(builtin=True)
    assert {row.name for row in rows} == set(first)
    assert all(row.owner_user_id is None and row.owner_org_id is None for row in rows)
    assert all(row.current is not None and row.current.number == 1 for row in rows)
    # and the platform terms compile to the same lexicon as the files
    platform = lists.active_terms("lexicon")
    terms = [Term(t["text"], t["category"], t.get("weight", 1.0)) for t in platform]
    allow = [t["text"] for t in lists.active_terms("allow")]
    assert Lexicon(terms, allow).version == default_lexicon().version


def test_sync_builtin_adds_a_version_only_when_the_file_changes(
    db: Any, tmp_path: Path, admin: Any
) -> None:
    shipped = tmp_path / "extra.tsv"
    shipped.write_text("赌博网站\tA1_h\n", encoding="utf-8")
    assert lists.sync_builtin(tmp_path) == ["builtin-extra"]
    row = ContentList.objects.get(name="builtin-extra")
    # a staff edit stands while the shipped file is unchanged
    lists.add_items(admin.user, row, [{"text": "网络赌场", "category": "A1_h"}])
    assert lists.sync_builtin(tmp_path) == []
    assert ContentList.objects.get(pk=row.pk).current.item_count == 2
    # a changed file is a new version
    shipped.write_text("赌博网站\tA1_h\n代开发票\tA1_h\n", encoding="utf-8")
    assert lists.sync_builtin(tmp_path) == ["builtin-extra"]
    current = ContentList.objects.get(pk=row.pk).current
    assert current is not None and (current.number, current.item_count) == (3, 2)


@pytest.mark.parametrize(
    ("content", "fmt", "expected"),
    [
        (b"a\tA1_a\n# note\n#\n\n", "txt", [{"text": "a", "category": "A1_a"}]),
        (
            "#台独\tA1_c\n".encode(),
            "txt",
            [{"text": "#台独", "category": "A1_c"}],
        ),
        (b"#tag,A1_c\n", "csv", [{"text": "#tag", "category": "A1_c"}]),
        (
            b"term,category,weight\na,A1_a,0.5\n",
            "csv",
            [{"text": "a", "category": "A1_a", "weight": 0.5}],
        ),
        (b"a,A1_a\na,A1_a\n", "csv", [{"text": "a", "category": "A1_a"}]),
    ],
)
def test_import_items_formats(content: bytes, fmt: str, expected: list[dict[str, Any]]) -> None:
    assert lists.import_items(content, fmt) == expected
