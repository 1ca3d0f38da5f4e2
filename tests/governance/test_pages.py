"""The governance pages: every page renders for staff; an organisation's owner sees
their organisation's rows and gets 404 for the platform's; a member, an outsider and
everyone who manages nothing get 404 for the whole section (and anonymous users the
sign-in page); the decide form resolves an item and the audit log page shows the
decision; the policy form shows a JSON error next to its field; the nav offers the
section only to those who may open it; the playground carries the AIGC label and the
report control."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from governance.context import governance_nav
from governance.models import (
    AuditEvent,
    ComplianceReport,
    ContentList,
    ContentListVersion,
    Policy,
    ReviewItem,
    ReviewStatus,
    Suspension,
)
from governance.services import audit
from portal.models import Organization

pytestmark = pytest.mark.django_db

SECTION = [
    "/governance/",
    "/governance/review/",
    "/governance/policies/",
    "/governance/policies/new/",
    "/governance/lists/",
    "/governance/audit/",
    "/governance/suspensions/",
    "/governance/compliance/",
]


def browser(actor: Any, language: str = "zh-hans") -> Client:
    client = Client(HTTP_ACCEPT_LANGUAGE=language)
    client.force_login(actor.user)
    return client


def item(org: Organization | None, text: str = "一段被举报的回答", **fields: Any) -> ReviewItem:
    defaults: dict[str, Any] = {
        "owner_org": org,
        "source": "report",
        "direction": "output",
        "served_name": "acme-lab/tiny-chat",
        "text": text,
        "context": {
            "model": "acme-lab/tiny-chat",
            "messages": [
                {"role": "user", "content": "你好"},
                {"role": "assistant", "content": text},
            ],
            "scores": {"A1_f": 0.82, "PII_PHONE": 0.1},
        },
        "categories": ["A1_f"],
        "reason": "含有不当内容",
        "due_at": timezone.now() + timedelta(hours=1),
    }
    return ReviewItem.objects.create(**{**defaults, **fields})


def content_list(owner: Any, name: str = "words", kind: str = "lexicon") -> ContentList:
    row = ContentList(name=name, kind=kind, default_category="A1_f")
    if owner is not None:
        row.set_owner(owner)
    row.save()
    version = ContentListVersion.objects.create(
        content_list=row,
        number=1,
        items=[{"text": "坏词", "category": "A1_f"}],
        item_count=1,
        sha256="0" * 64,
        note="first",
    )
    row.current = version
    row.save(update_fields=["current"])
    return row


@pytest.fixture
def rows(org: Organization, owner: Any) -> dict[str, Any]:
    """An item of the org, one of the platform, an org list and policy, a suspension of
    the org, a compliance report of the org."""
    policy = Policy(name="strict", rules={"A1": {"input": {"threshold": 0.5, "action": "block"}}})
    policy.set_owner(org)
    policy.save()
    report = ComplianceReport(served_name="acme-lab/tiny-chat")
    report.set_owner(org)
    report.checks = [
        {
            "id": "lexicon_size",
            "title": "关键词库规模",
            "value": 12000,
            "threshold": 10000,
            "passed": True,
            "detail": "",
        }
    ]
    report.save()
    return {
        "org_item": item(org),
        "platform_item": item(None, "平台的条目"),
        "list": content_list(org),
        "policy": policy,
        "suspension": Suspension.objects.create(
            user=owner.user, org=org, level="throttled", reason="5 次违规", violations=5
        ),
        "report": report,
    }


def detail_pages(rows: dict[str, Any]) -> list[str]:
    return [
        f"/governance/review/{rows['org_item'].item_id}/",
        f"/governance/policies/{rows['policy'].pk}/",
        f"/governance/lists/{rows['list'].pk}/",
        f"/governance/compliance/{rows['report'].report_id}/",
    ]


def test_every_page_renders_for_staff(admin: Any, rows: dict[str, Any]) -> None:
    client = browser(admin)
    for url in [*SECTION, *detail_pages(rows), "/governance/verify/"]:
        response = client.get(url)
        assert response.status_code == 200, url
    queue = client.get("/governance/review/").content.decode()
    assert rows["org_item"].item_id in queue and rows["platform_item"].item_id in queue


def test_org_owner_sees_their_org_rows_and_404_for_the_platforms(
    owner: Any, rows: dict[str, Any]
) -> None:
    client = browser(owner)
    for url in [*SECTION, *detail_pages(rows)]:
        assert client.get(url).status_code == 200, url
    queue = client.get("/governance/review/").content.decode()
    assert rows["org_item"].item_id in queue
    assert rows["platform_item"].item_id not in queue
    platform = client.get(f"/governance/review/{rows['platform_item'].item_id}/")
    assert platform.status_code == 404


@pytest.mark.parametrize("who", ["teammate", "outsider"])
def test_who_manages_nothing_gets_404_for_every_page(
    who: str, request: pytest.FixtureRequest, rows: dict[str, Any]
) -> None:
    client = browser(request.getfixturevalue(who))
    for url in [*SECTION, *detail_pages(rows)]:
        assert client.get(url).status_code == 404, url
    decide = f"/governance/review/{rows['org_item'].item_id}/decide/"
    assert client.post(decide, {"decision": "approve"}).status_code == 404
    rows["org_item"].refresh_from_db()
    assert rows["org_item"].status == ReviewStatus.PENDING


def test_anonymous_users_are_sent_to_sign_in(client: Client) -> None:
    response = client.get("/governance/review/")
    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_outsider_gets_404_for_another_orgs_item_even_as_a_manager_of_their_own(
    outsider: Any, rows: dict[str, Any]
) -> None:
    from portal.services.accounts import create_organization

    create_organization(outsider.user, "other-lab")
    client = browser(outsider)
    assert client.get("/governance/review/").status_code == 200
    for url in detail_pages(rows):
        assert client.get(url).status_code == 404, url


def test_decide_form_removes_the_item_and_the_audit_log_shows_it(
    admin: Any, rows: dict[str, Any]
) -> None:
    client = browser(admin)
    target = rows["org_item"]
    response = client.post(
        f"/governance/review/{target.item_id}/decide/",
        {"decision": "remove", "notes": "确认违规，已删除"},
    )
    assert response.status_code == 302
    target.refresh_from_db()
    assert target.status == ReviewStatus.REMOVED
    assert target.decided_by == admin.user
    assert target.notes == "确认违规，已删除"
    event = AuditEvent.objects.get(action="review.decide", target_id=target.item_id)
    assert event.data["decision"] == "remove"

    page = client.get(f"/governance/audit/?target={target.item_id}").content.decode()
    assert "review.decide" in page and "确认违规，已删除" in page
    assert 'id="gv-export-csv"' in page
    shown = client.get(f"/governance/review/{target.item_id}/").content.decode()
    assert 'id="gv-resolution"' in shown


def test_adjusting_a_lexicon_needs_a_list_and_terms(admin: Any, rows: dict[str, Any]) -> None:
    client = browser(admin)
    target = rows["org_item"]
    response = client.post(
        f"/governance/review/{target.item_id}/decide/", {"decision": "adjust_lexicon"}
    )
    assert response.status_code == 400
    assert "调整词库时请选择词库" in response.content.decode()
    target.refresh_from_db()
    assert target.status == ReviewStatus.PENDING


def test_assign_to_me_records_the_assignee(owner: Any, rows: dict[str, Any]) -> None:
    client = browser(owner)
    target = rows["org_item"]
    response = client.post(f"/governance/review/{target.item_id}/assign/")
    assert response.status_code == 302
    target.refresh_from_db()
    assert target.assigned_to == owner.user
    mine = client.get("/governance/review/?mine=on").content.decode()
    assert target.item_id in mine


def test_queue_marks_and_filters_overdue_items(admin: Any, org: Organization) -> None:
    late = item(org, "迟到的条目", due_at=timezone.now() - timedelta(hours=2))
    fresh = item(org, "新条目")
    client = browser(admin)
    page = client.get("/governance/review/").content.decode()
    assert f'class="gv-item gv-overdue" data-item="{late.item_id}"' in page
    assert f'class="gv-item" data-item="{fresh.item_id}"' in page
    overdue = client.get("/governance/review/?overdue=on").content.decode()
    assert late.item_id in overdue and fresh.item_id not in overdue


def test_item_page_shows_context_scores_and_reason(admin: Any, rows: dict[str, Any]) -> None:
    page = browser(admin).get(f"/governance/review/{rows['org_item'].item_id}/")
    body = page.content.decode()
    assert "含有不当内容" in body
    assert 'id="gv-conversation"' in body and "你好" in body
    assert "A1_f" in body and "0.820" in body


def test_policy_form_shows_a_json_error_next_to_its_field(owner: Any, org: Organization) -> None:
    client = browser(owner)
    response = client.post(
        "/governance/policies/new/",
        {"owner": f"org:{org.pk}", "name": "broken", "rules": "{not json", "enabled": "on"},
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="gv-field-rules"' in body
    field = body.split('id="gv-field-rules"', 1)[1].split("</p>", 1)[0]
    assert "不是有效的 JSON" in field
    assert not Policy.objects.filter(name="broken").exists()


def test_audit_log_is_scoped_and_checks_the_chain_for_staff(
    admin: Any, owner: Any, org: Organization
) -> None:
    audit.record("policy.update", actor=admin.user, org=org, target_type="policy", target_id="7")
    audit.record("classifier.activate", actor=admin.user, target_type="classifier", target_id="1")
    mine = browser(owner).get("/governance/audit/").content.decode()
    assert "policy.update" in mine and "classifier.activate" not in mine
    staff = browser(admin).get("/governance/audit/?verify=1").content.decode()
    assert "classifier.activate" in staff
    assert 'id="gv-chain" class="gv-ok"' in staff


def test_english_pages(admin: Any, rows: dict[str, Any]) -> None:
    body = browser(admin, "en").get("/governance/review/").content.decode()
    assert "Review queue" in body
    assert "审核队列" not in body


def test_nav_offers_governance_to_managers_only(
    admin: Any, owner: Any, teammate: Any, outsider: Any
) -> None:
    for actor, shown in ((admin, True), (owner, True), (teammate, False), (outsider, False)):
        page = browser(actor).get("/playground/").content.decode()
        assert ('id="nav-governance"' in page) is shown, actor.user.username


def test_nav_queries_memberships_only_when_read_and_never_for_anonymous(
    rf: Any, owner: Any, org: Organization
) -> None:
    request = rf.get("/playground/")
    request.user = owner.user
    with CaptureQueriesContext(connection) as before_read:
        nav = governance_nav(request)
    with CaptureQueriesContext(connection) as on_read:
        assert nav["can_govern"]
    request.user = AnonymousUser()
    with CaptureQueriesContext(connection) as anonymous:
        assert not governance_nav(request)["can_govern"]
    assert len(before_read) == 0 and len(on_read) > 0 and len(anonymous) == 0


def test_playground_page_carries_the_aigc_label_and_report_texts(outsider: Any) -> None:
    page = browser(outsider).get("/playground/").content.decode()
    assert 'data-aigc-label="人工智能生成"' in page
    assert 'data-report="举报"' in page
    english = browser(outsider, "en").get("/playground/").content.decode()
    assert 'data-aigc-label="AI-generated"' in english
    assert 'data-report="Report"' in english


def test_policy_form_shows_an_invalid_rule_on_its_path(owner: Any, org: Organization) -> None:
    client = browser(owner)
    rules = '{"A1": {"input": {"threshold": 0.5, "action": "explode"}}}'
    response = client.post(
        "/governance/policies/new/", {"owner": f"org:{org.pk}", "name": "odd", "rules": rules}
    )
    assert response.status_code == 200
    field = response.content.decode().split('id="gv-field-rules"', 1)[1].split("</p>", 1)[0]
    assert "rules.A1.input.action" in field
    assert not Policy.objects.filter(name="odd").exists()


def test_policy_is_created_then_edited_to_a_new_version(owner: Any, org: Organization) -> None:
    client = browser(owner)
    rules = '{"A2": {"output": {"threshold": 0.4, "action": "flag"}}}'
    response = client.post(
        "/governance/policies/new/",
        {"owner": f"org:{org.pk}", "name": "careful", "rules": rules, "enabled": "on"},
    )
    assert response.status_code == 302
    policy = Policy.objects.get(name="careful")
    assert policy.owner_org == org and policy.rules["A2"]["output"]["action"] == "flag"
    edit = client.post(
        f"/governance/policies/{policy.pk}/",
        {"name": "careful", "rules": rules, "labels": '{"explicit": "end"}', "enabled": "on"},
    )
    assert edit.status_code == 302
    policy.refresh_from_db()
    assert policy.version == 2 and policy.labels == {"explicit": "end"}
    assert AuditEvent.objects.filter(action="policy.update", target_id=str(policy.pk)).exists()


def test_list_edits_and_imports_are_new_versions(owner: Any, rows: dict[str, Any]) -> None:
    client = browser(owner)
    target = rows["list"]
    response = client.post(
        f"/governance/lists/{target.pk}/items/",
        {"add": "新词一\n新词二\tA2_d", "remove": "坏词", "note": "review"},
    )
    assert response.status_code == 302
    target.refresh_from_db()
    assert target.current is not None and target.current.number == 2
    assert {(i["text"], i["category"]) for i in target.current.items} == {
        ("新词一", "A1_f"),
        ("新词二", "A2_d"),
    }
    upload = SimpleUploadedFile("words.txt", "第三个词\n# comment\n第四个词\tA3_a\n".encode())
    imported = client.post(f"/governance/lists/{target.pk}/import/", {"file": upload, "fmt": "txt"})
    assert imported.status_code == 302
    target.refresh_from_db()
    assert target.current is not None and target.current.number == 3
    assert target.current.item_count == 4
    page = client.get(f"/governance/lists/{target.pk}/").content.decode()
    assert "第四个词" in page and "v3" in page


def test_a_bad_import_names_its_line(owner: Any, rows: dict[str, Any]) -> None:
    target = rows["list"]
    upload = SimpleUploadedFile("words.txt", "好词\tNOT_A_RISK\n".encode())
    response = browser(owner).post(
        f"/governance/lists/{target.pk}/import/", {"file": upload, "fmt": "txt"}
    )
    assert response.status_code == 400
    field = response.content.decode().split('id="gv-field-file"', 1)[1].split("</p>", 1)[0]
    assert "line 1" in field


def test_an_active_suspension_is_lifted(owner: Any, rows: dict[str, Any]) -> None:
    suspension = rows["suspension"]
    response = browser(owner).post(f"/governance/suspensions/{suspension.pk}/lift/")
    assert response.status_code == 302
    suspension.refresh_from_db()
    assert suspension.lifted_by == owner.user and suspension.lifted_at is not None
    assert AuditEvent.objects.filter(action="suspension.lift").exists()


def test_verify_page_answers_for_a_pasted_text(client: Client) -> None:
    response = client.post("/governance/verify/", {"text": "一段从未生成过的文字"})
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="gv-verify-verdict"' in body and "没有找到本平台生成这段内容的记录" in body


def test_compliance_form_shows_why_a_model_cannot_be_checked(owner: Any, org: Organization) -> None:
    response = browser(owner).post(
        "/governance/compliance/", {"owner": f"org:{org.pk}", "served_name": "nobody/nothing"}
    )
    assert response.status_code == 200
    assert 'class="gv-error" role="alert"' in response.content.decode()
    assert not ComplianceReport.objects.filter(served_name="nobody/nothing").exists()


def test_adjusting_a_lexicon_from_an_item_adds_the_terms(admin: Any, rows: dict[str, Any]) -> None:
    target, words = rows["org_item"], rows["list"]
    response = browser(admin).post(
        f"/governance/review/{target.item_id}/decide/",
        {
            "decision": "adjust_lexicon",
            "content_list": str(words.pk),
            "add_terms": "漏掉的词",
            "notes": "补充词库",
        },
    )
    assert response.status_code == 302
    target.refresh_from_db()
    words.refresh_from_db()
    assert target.status == ReviewStatus.REMOVED
    assert words.current is not None
    assert "漏掉的词" in {item["text"] for item in words.current.items}


def test_an_appeal_is_decided_from_the_item_page(
    admin: Any, teammate: Any, rows: dict[str, Any]
) -> None:
    from governance.models import Appeal, AppealStatus

    target = rows["org_item"]
    target.status, target.subject_user = ReviewStatus.REMOVED, teammate.user
    target.save(update_fields=["status", "subject_user"])
    appeal = Appeal.objects.create(item=target, user=teammate.user, reason="这不是违规内容")
    client = browser(admin)
    page = client.get(f"/governance/review/{target.item_id}/").content.decode()
    assert "这不是违规内容" in page
    response = client.post(
        f"/governance/appeals/{appeal.appeal_id}/decide/",
        {f"{appeal.appeal_id}-upheld": "0", f"{appeal.appeal_id}-response": "已恢复"},
    )
    assert response.status_code == 302
    appeal.refresh_from_db()
    target.refresh_from_db()
    assert appeal.status == AppealStatus.OVERTURNED and appeal.response == "已恢复"
    assert target.status == ReviewStatus.APPROVED


def test_section_nav_links_to_the_pages_not_the_api(admin: Any) -> None:
    body = browser(admin).get("/governance/").content.decode()
    nav = body.split('id="gv-nav"', 1)[1].split("</nav>", 1)[0]
    links = re.findall(r'href="([^"]+)"', nav)
    assert len(links) == 8
    assert all(link.startswith("/governance/") for link in links), links
    assert 'id="nav-governance"' in body


def test_verify_page_shows_no_section_nav_to_who_governs_nothing(outsider: Any) -> None:
    body = browser(outsider).get("/governance/verify/").content.decode()
    assert 'id="gv-verify-form"' in body and 'id="gv-nav"' not in body
