"""The governance pages, mounted at ``/governance/`` by ``portal/urls.py``: the review
queue and an item's page (context, checker scores, assignment, the decision form,
appeals), policies (list, create and edit as JSON), lists (lexicons, allow-lists and
question banks: items, history, edits, import), the audit log (filters, export links,
chain check), suspensions, compliance reports and label verification.

Views are thin: access through :mod:`governance.access` (staff and organisation
managers), rows through :mod:`governance.services.scope` or ``restrict()``, every change
through a service (which writes the audit event); a service's error is shown on the
field it names, or as a message.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from governance.access import governor_required, managed_orgs, owned
from governance.forms import (
    LABELS,
    AppealDecideForm,
    AuditFilter,
    ComplianceForm,
    DecideForm,
    ImportForm,
    ItemsForm,
    ListForm,
    PolicyForm,
    QueueFilter,
    VerifyForm,
    as_json,
    lines,
)
from governance.models import (
    Appeal,
    AppealStatus,
    ComplianceReport,
    ContentList,
    ListKind,
    ReviewItem,
)
from governance.moderation.taxonomy import CLASSES, RISKS
from governance.services import (
    audit,
    compliance,
    lists,
    policies,
    provenance,
    review,
    scope,
    suspensions,
)
from portal.auth import acting_user
from portal.errors import NotFound, PlatformError
from portal.views import not_found

PER_PAGE = 25
AUDIT_PER_PAGE = 50
LIST_ITEMS_SHOWN = 500
VERSIONS_SHOWN = 50
EDITABLE_KINDS = (ListKind.LEXICON, ListKind.ALLOW)


def _page(request: HttpRequest, rows: Any, per_page: int = PER_PAGE) -> Any:
    return Paginator(rows, per_page).get_page(request.GET.get("page"))


def _risk_name(code: str) -> str:
    """``A1_f 宣扬暴力、淫秽色情`` (the English name on English pages)."""
    risk = RISKS.get(code) or CLASSES.get(code)
    if risk is None:
        return code
    return f"{code} {risk.en if get_language() == 'en' else risk.zh}"


# ---------------------------------------------------------------- overview


@governor_required
def home(request: HttpRequest) -> HttpResponse:
    """What waits for the admin: pending and overdue items, and the sections."""
    user = acting_user(request)
    pending = scope.visible_items(user).filter(status__in=review.OPEN)
    context = {
        "pending": pending.count(),
        "overdue": review.overdue(pending).count(),
        "mine": pending.filter(assigned_to=user).count(),
        "policies": policies.visible_policies(user, "write").count(),
        "lists": lists.visible_lists(user, "write").count(),
        "active_suspensions": scope.visible_suspensions(user)
        .filter(suspensions.active_q())
        .count(),
    }
    return render(request, "governance/home.html", context)


# ---------------------------------------------------------------- review queue


@governor_required
def queue(request: HttpRequest) -> HttpResponse:
    """The review queue, newest first, with its filters; overdue items are marked."""
    user = acting_user(request)
    items = scope.visible_items(user).select_related("assigned_to", "owner_org")
    filters = QueueFilter(request.GET or None)
    now = timezone.now()
    if filters.is_valid():
        chosen = filters.cleaned_data
        if chosen["status"]:
            items = items.filter(status=chosen["status"])
        if chosen["source"]:
            items = items.filter(source=chosen["source"])
        if chosen["overdue"]:
            items = review.overdue(items, now)
        if chosen["mine"]:
            items = items.filter(assigned_to=user)
    page = _page(request, items)
    rows = [(item, _overdue(item, now)) for item in page]
    query = {k: v for k, v in request.GET.items() if k != "page"}
    context = {"filters": filters, "page": page, "rows": rows, "query": urlencode(query)}
    return render(request, "governance/queue.html", context)


def _overdue(item: ReviewItem, now: Any) -> bool:
    return item.status in review.OPEN and item.due_at < now


def _visible_item(request: HttpRequest, item_id: str) -> ReviewItem:
    return get_object_or_404(
        scope.visible_items(acting_user(request)).select_related(
            "decision", "assigned_to", "decided_by", "subject_user", "owner_org"
        ),
        item_id=item_id,
    )


def _list_choices(user: Any) -> list[tuple[str, str]]:
    """The lexicons and allow-lists a reviewer may adjust from an item's page."""
    rows = lists.visible_lists(user, "write").filter(kind__in=EDITABLE_KINDS)
    return [
        (
            str(row.pk),
            f"{row.name if not row.namespace else row} · {LABELS.get(row.kind, row.kind)}",
        )
        for row in rows[:500]
    ]


@governor_required
def item_detail(request: HttpRequest, item_id: str) -> HttpResponse:
    """An item with its context, checker scores, decision form and appeals."""
    item = _visible_item(request, item_id)
    return _item_page(request, item, DecideForm(_list_choices(request.user)))


def _item_page(
    request: HttpRequest, item: ReviewItem, form: DecideForm, status: int = 200
) -> HttpResponse:
    context_data = item.context or {}
    decision = item.decision
    scores = (decision.scores if decision else None) or context_data.get("scores") or {}
    results = (decision.results if decision else None) or context_data.get("results") or []
    appeals = [
        (appeal, AppealDecideForm(prefix=appeal.appeal_id))
        for appeal in item.appeals.select_related("user", "decided_by")
    ]
    context = {
        "item": item,
        "overdue": _overdue(item, timezone.now()),
        "messages_": _conversation(context_data),
        "context_rest": {
            key: value
            for key, value in context_data.items()
            if key not in ("messages", "scores", "results")
        },
        "scores": sorted(
            ((_risk_name(k), v) for k, v in scores.items() if isinstance(v, int | float)),
            key=lambda pair: -pair[1],
        ),
        "results": results,
        "categories": [_risk_name(code) for code in item.categories or []],
        "form": form,
        "appeals": appeals,
        "pending": item.status in review.OPEN,
        "open_status": AppealStatus.OPEN,
    }
    return render(request, "governance/item.html", context, status=status)


def _conversation(context: dict[str, Any]) -> list[dict[str, str]]:
    found = context.get("messages") or context.get("conversation") or []
    if not isinstance(found, list):
        return []
    return [
        {"role": str(m.get("role", "")), "content": str(m.get("content", ""))}
        for m in found
        if isinstance(m, dict)
    ]


@governor_required
@require_POST
def item_assign(request: HttpRequest, item_id: str) -> HttpResponse:
    """Assign the item to oneself."""
    user = acting_user(request)
    item = _visible_item(request, item_id)
    try:
        review.assign(user, item, user)
    except PlatformError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, _("已分配给你。"))
    return redirect("gv-item", item_id=item.item_id)


@governor_required
@require_POST
def item_decide(request: HttpRequest, item_id: str) -> HttpResponse:
    """Decide an item (approve, remove, escalate, adjust a lexicon) with notes."""
    user = acting_user(request)
    item = _visible_item(request, item_id)
    form = DecideForm(_list_choices(user), request.POST)
    if not form.is_valid():
        return _item_page(request, item, form, status=400)
    lexicon = form.lexicon()
    try:
        review.decide(
            user, item, form.cleaned_data["decision"], form.cleaned_data["notes"], lexicon
        )
    except NotFound:
        return not_found(request)
    except PlatformError as exc:
        form.add_error(None, exc.message)
        return _item_page(request, item, form, status=exc.status)
    messages.success(request, _("已处理。"))
    return redirect("gv-item", item_id=item.item_id)


@governor_required
@require_POST
def appeal_decide(request: HttpRequest, appeal_id: str) -> HttpResponse:
    """Uphold or overturn an appeal against an item the admin may review."""
    user = acting_user(request)
    appeal = get_object_or_404(
        Appeal.objects.select_related("item"),
        appeal_id=appeal_id,
        item__in=scope.visible_items(user),
    )
    form = AppealDecideForm(request.POST, prefix=appeal.appeal_id)
    if form.is_valid():
        try:
            review.decide_appeal(
                user, appeal, form.cleaned_data["upheld"], form.cleaned_data["response"]
            )
        except PlatformError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, _("申诉已处理。"))
    else:
        messages.error(request, _("请选择申诉结果。"))
    return redirect("gv-item", item_id=appeal.item.item_id)


# ---------------------------------------------------------------- policies


@governor_required
def policy_list(request: HttpRequest) -> HttpResponse:
    user = acting_user(request)
    rows = policies.visible_policies(user, "write").select_related("api_key")
    return render(request, "governance/policies.html", {"policies": rows})


@governor_required
def policy_new(request: HttpRequest) -> HttpResponse:
    """Create a policy; a document that does not validate is shown on its field path."""
    user = acting_user(request)
    form = PolicyForm(user, managed_orgs(user), request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            policy = policies.create_policy(user, form.chosen_owner(), form.data_for_service())
        except NotFound:
            return not_found(request)
        except PlatformError as exc:
            form.show_error(exc.param, exc.message)
        else:
            messages.success(request, _("策略已创建。"))
            return redirect("gv-policy", pk=policy.pk)
    return render(request, "governance/policy_form.html", {"form": form, "policy": None})


@governor_required
def policy_edit(request: HttpRequest, pk: int) -> HttpResponse:
    """Edit a policy (its version grows by one on every saved change)."""
    user = acting_user(request)
    policy = get_object_or_404(policies.visible_policies(user, "write"), pk=pk)
    initial = {
        "name": policy.name,
        "description": policy.description,
        "served_name": policy.served_name,
        "api_key": str(policy.api_key_id or ""),
        "enabled": policy.enabled,
        **{name: as_json(getattr(policy, name)) for name in ("rules", "offenders", "labels")},
    }
    form = PolicyForm(user, managed_orgs(user), request.POST or None, initial=initial, editing=True)
    if request.method == "POST" and form.is_valid():
        try:
            policy = policies.update_policy(user, policy, form.data_for_service())
        except PlatformError as exc:
            form.show_error(exc.param, exc.message)
        else:
            messages.success(request, _("策略已保存（版本 %(v)s）。") % {"v": policy.version})
            return redirect("gv-policy", pk=policy.pk)
    return render(request, "governance/policy_form.html", {"form": form, "policy": policy})


@governor_required
@require_POST
def policy_delete(request: HttpRequest, pk: int) -> HttpResponse:
    user = acting_user(request)
    policy = get_object_or_404(policies.visible_policies(user, "write"), pk=pk)
    try:
        policies.delete_policy(user, policy)
    except PlatformError as exc:
        messages.error(request, exc.message)
        return redirect("gv-policy", pk=pk)
    messages.success(request, _("策略已删除。"))
    return redirect("gv-policies")


# ---------------------------------------------------------------- lists


@governor_required
def list_index(request: HttpRequest) -> HttpResponse:
    """Lexicons, allow-lists and question banks, with the form to create one."""
    user = acting_user(request)
    form = ListForm(user, managed_orgs(user), request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            created = lists.create_list(
                user,
                form.chosen_owner(),
                data["name"],
                data["kind"],
                description=data["description"],
                default_category=data["default_category"],
            )
        except PlatformError as exc:
            form.show_error(exc.param, exc.message)
        else:
            messages.success(request, _("已创建。"))
            return redirect("gv-list", pk=created.pk)
    rows = lists.visible_lists(user, "write").select_related("current")
    kind = request.GET.get("kind", "")
    if kind:
        rows = rows.filter(kind=kind)
    context = {"lists": rows, "form": form, "kinds": ListKind.choices, "kind": kind}
    return render(request, "governance/lists.html", context)


def _governed_list(request: HttpRequest, pk: int) -> ContentList:
    return get_object_or_404(
        lists.visible_lists(acting_user(request), "write").select_related("current"), pk=pk
    )


@governor_required
def list_detail(request: HttpRequest, pk: int) -> HttpResponse:
    content_list = _governed_list(request, pk)
    return _list_page(request, content_list, ItemsForm(), ImportForm())


def _list_page(
    request: HttpRequest,
    content_list: ContentList,
    items_form: ItemsForm,
    import_form: ImportForm,
    status: int = 200,
) -> HttpResponse:
    current = content_list.current
    items = list(current.items if current else [])
    query = request.GET.get("q", "").strip()
    if query:
        items = [item for item in items if query in str(item.get("text", ""))]
    versions = content_list.versions.select_related("created_by")[:VERSIONS_SHOWN]
    context = {
        "content_list": content_list,
        "items": items[:LIST_ITEMS_SHOWN],
        "total": len(items),
        "shown": min(len(items), LIST_ITEMS_SHOWN),
        "q": query,
        "versions": versions,
        "items_form": items_form,
        "import_form": import_form,
    }
    return render(request, "governance/list.html", context, status=status)


def _parse_items(text: str | None, category: str) -> list[dict[str, str]]:
    """Lines ``text`` or ``text<TAB>category`` as items (validated by the service)."""
    items = []
    for line in lines(text):
        term, _tab, own = line.partition("\t")
        items.append({"text": term.strip(), "category": own.strip() or category})
    return items


@governor_required
@require_POST
def list_items(request: HttpRequest, pk: int) -> HttpResponse:
    """Add and/or remove items: one new version."""
    user = acting_user(request)
    content_list = _governed_list(request, pk)
    form = ItemsForm(request.POST)
    if not form.is_valid():
        return _list_page(request, content_list, form, ImportForm(), status=400)
    data = form.cleaned_data
    category = data["category"] or content_list.default_category
    try:
        lists.change_items(
            user,
            content_list,
            add=_parse_items(data["add"], category),
            remove=lines(data["remove"]),
            note=data["note"],
        )
    except PlatformError as exc:
        form.add_error(None, exc.message)
        return _list_page(request, content_list, form, ImportForm(), status=exc.status)
    messages.success(request, _("已保存为新版本。"))
    return redirect("gv-list", pk=content_list.pk)


@governor_required
@require_POST
def list_import(request: HttpRequest, pk: int) -> HttpResponse:
    """Import a txt or csv file: added to the current items, or replacing them."""
    user = acting_user(request)
    content_list = _governed_list(request, pk)
    form = ImportForm(request.POST, request.FILES)
    if not form.is_valid():
        return _list_page(request, content_list, ItemsForm(), form, status=400)
    data = form.cleaned_data
    try:
        version = lists.import_into(
            user,
            content_list,
            data["file"].read(),
            data["fmt"],
            replace=data["replace"],
            default_category=data["category"],
            note=data["note"] or str(_("导入 %(name)s") % {"name": data["file"].name}),
        )
    except PlatformError as exc:
        form.show_error(exc.param, exc.message)
        return _list_page(request, content_list, ItemsForm(), form, status=exc.status)
    messages.success(request, _("已保存为新版本 v%(n)s。") % {"n": version.number})
    return redirect("gv-list", pk=content_list.pk)


# ---------------------------------------------------------------- audit log


@governor_required
def audit_log(request: HttpRequest) -> HttpResponse:
    """The audit log with filters, export links and (on request) the chain check."""
    user = acting_user(request)
    events = scope.visible_audit(user)
    filters = AuditFilter(request.GET or None)
    params: dict[str, str] = {}
    if filters.is_valid():
        events, params = _audit_filtered(events, filters.cleaned_data)
    page = _page(request, events, AUDIT_PER_PAGE)
    chain = audit.verify_chain() if request.GET.get("verify") else None
    query = {k: v for k, v in request.GET.items() if k not in ("page", "verify")}
    context = {
        "filters": filters,
        "page": page,
        "chain": chain,
        "query": urlencode(query),
        "export_csv": "/api/governance/audit/?" + urlencode({**params, "format": "csv"}),
        "export_jsonl": "/api/governance/audit/?" + urlencode({**params, "format": "jsonl"}),
        "staff": scope.is_staff(user),
    }
    return render(request, "governance/audit.html", context)


def _audit_filtered(events: Any, chosen: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    """The log narrowed as ``GET /api/governance/audit/`` narrows it (an action, or a
    prefix ending in "."; a target id or ``type:id``; whole days, inclusive), and that
    API's query for the same rows (the export links)."""
    params: dict[str, str] = {}
    if action := chosen["action"]:
        prefix = action.endswith(".")
        events = events.filter(**{"action__startswith" if prefix else "action": action})
        params["action"] = action
    if chosen["actor"]:
        events = events.filter(actor_name=chosen["actor"])
        params["actor"] = chosen["actor"]
    if target := chosen["target"]:
        kind, _colon, ident = target.rpartition(":")
        events = events.filter(target_id=ident, **({"target_type": kind} if kind else {}))
        params["target"] = target
    zone = timezone.get_current_timezone()
    if since := chosen["since"]:
        start = datetime.combine(since, time.min, zone)
        events = events.filter(ts__gte=start)
        params["since"] = start.isoformat()
    if until := chosen["until"]:
        end = datetime.combine(until + timedelta(days=1), time.min, zone)
        events = events.filter(ts__lt=end)
        params["until"] = end.isoformat()
    return events, params


# ---------------------------------------------------------------- suspensions


@governor_required
def suspension_list(request: HttpRequest) -> HttpResponse:
    user = acting_user(request)
    rows = scope.visible_suspensions(user).select_related("user", "org", "lifted_by")
    page = _page(request, rows)
    context = {"page": page, "rows": [(row, suspensions.is_active(row)) for row in page]}
    return render(request, "governance/suspensions.html", context)


@governor_required
@require_POST
def suspension_lift(request: HttpRequest, pk: int) -> HttpResponse:
    user = acting_user(request)
    suspension = get_object_or_404(scope.visible_suspensions(user), pk=pk)
    try:
        suspensions.lift(user, suspension)
    except PlatformError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, _("已解除。"))
    return redirect("gv-suspensions")


# ---------------------------------------------------------------- compliance


@governor_required
def compliance_list(request: HttpRequest) -> HttpResponse:
    """Reports, newest first, and the form to start one for a served model."""
    user = acting_user(request)
    form = ComplianceForm(user, managed_orgs(user), request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            report = compliance.create_report(
                user, form.chosen_owner(), form.cleaned_data["served_name"]
            )
        except PlatformError as exc:
            form.show_error(exc.param, exc.message)
        else:
            return redirect("gv-report", report_id=report.report_id)
    page = _page(request, owned(ComplianceReport, user))
    return render(request, "governance/compliance.html", {"form": form, "page": page})


@governor_required
def compliance_detail(request: HttpRequest, report_id: str) -> HttpResponse:
    report = get_object_or_404(owned(ComplianceReport, acting_user(request)), report_id=report_id)
    context = {
        "report": report,
        "checks": report.checks or [],
        "active": report.status in ("pending", "running"),
        "export_md": f"/api/governance/compliance-reports/{report.report_id}/export?format=md",
        "export_docx": f"/api/governance/compliance-reports/{report.report_id}/export?format=docx",
    }
    return render(request, "governance/report.html", context)


# ---------------------------------------------------------------- label verification


def verify(request: HttpRequest) -> HttpResponse:
    """Paste a text or upload a file: was it generated here, when, by which model, is its
    label intact. Open to everyone, as ``POST /api/governance/verify`` is."""
    form = VerifyForm(request.POST or None, request.FILES or None)
    result: dict[str, Any] | None = None
    status = 200
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data.get("file")
        try:
            if upload is not None:
                data = upload.read()
                kind = provenance.guess_kind(upload.name, data)
                result = provenance.verify_file(data, kind, request.user)
            else:
                result = provenance.verify_text(form.cleaned_data["text"], request.user)
        except PlatformError as exc:
            form.add_error(None, exc.message)
            status = exc.status
    context = {"form": form, "result": result, "rows": _result_rows(result or {})}
    return render(request, "governance/verify.html", context, status=status)


def _result_rows(result: dict[str, Any]) -> list[tuple[str, Any]]:
    """A verification answer as label/value rows (nested values shown as JSON)."""
    return [
        (key, as_json(value) if isinstance(value, dict | list) else value)
        for key, value in result.items()
    ]
