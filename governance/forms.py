"""The forms of the governance pages. Each one only gathers what an admin chooses; the
verbs are the services' (:mod:`governance.services.review`, ``policies``, ``lists``,
``suspensions``, ``compliance``, ``provenance``) and their errors are shown on the field
their ``param`` names."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.db.models import Q
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from governance.models import (
    DecisionSource,
    ListKind,
    ReviewDecision,
    ReviewStatus,
)
from portal.models import APIKey, Organization

PLATFORM = "platform"
SELF = "self"
ORG_PREFIX = "org:"
MAX_TERMS = 10_000
# The shown names of the governance records' status, source, direction and kind values
# (the models' choices are English; pages show these).
LABELS: dict[str, Any] = {
    # review items
    "pending": _("待审核"),
    "approved": _("已通过"),
    "removed": _("已删除"),
    "escalated": _("已升级"),
    # decisions
    "approve": _("审核通过"),
    "remove": _("删除"),
    "escalate": _("升级处理"),
    "adjust_lexicon": _("调整词库"),
    # sources and directions
    "gateway": _("网关"),
    "moderation_api": _("审核接口"),
    "report": _("用户举报"),
    "upload": _("上传检测"),
    "input": _("输入"),
    "output": _("输出"),
    # appeals
    "open": _("待处理"),
    "upheld": _("维持原决定"),
    "overturned": _("已撤销原决定"),
    # lists
    "lexicon": _("词库"),
    "allow": _("白名单"),
    "bank_generated": _("生成内容测试题库"),
    "bank_refuse": _("应拒答测试题库"),
    "bank_non_refusal": _("非拒答测试题库"),
    # uploads (GB 45438-2025's three outcomes)
    "is": _("属于人工智能生成"),
    "may": _("可能为人工智能生成"),
    "suspected": _("疑似人工智能生成"),
    "none": _("未发现生成标识"),
    # suspensions
    "throttled": _("限流"),
    "suspended": _("封禁"),
    # compliance reports
    "running": pgettext_lazy("governance", "进行中"),
    "finished": _("已完成"),
    "failed": _("失败"),
}


def shown(choices: list[tuple[str, str]]) -> list[tuple[str, Any]]:
    """A model's choices with the pages' names."""
    return [(value, LABELS.get(value, label)) for value, label in choices]


MAX_UPLOAD_BYTES = 20 * 1024 * 1024
JSON_FIELDS = ("rules", "offenders", "labels")


def owner_choices(user: Any, orgs: Any, platform: bool) -> list[tuple[str, str]]:
    """Who a new policy, list or report may belong to: the platform (staff only, where
    ``platform``), the organisations ``user`` manages, and the user."""
    choices: list[tuple[str, str]] = []
    if platform and (user.is_staff or user.is_superuser):
        choices.append((PLATFORM, str(_("平台（所有请求）"))))
    choices += [(f"{ORG_PREFIX}{org.pk}", str(org)) for org in orgs]
    choices.append((SELF, str(user.get_username())))
    return choices


def owner_of(value: str, user: Any, orgs: Any) -> Any:
    """The owner a choice stands for: None (the platform), an organisation or the user."""
    if value == PLATFORM:
        return None
    if value.startswith(ORG_PREFIX):
        return orgs.get(pk=int(value[len(ORG_PREFIX) :]))
    return user


class ServiceErrors(forms.Form):
    """A form that shows a service's error next to the field its ``param`` names."""

    # A service's param → the form field showing it, where the names differ.
    PARAMS: dict[str, str] = {}

    def show_error(self, param: str | None, message: str) -> None:
        """``rules.A1.input.action`` shows on ``rules``, with the path unless the message
        starts with it already; an unknown param shows on the form."""
        path = param or ""
        head = path.split(".", 1)[0].split("[", 1)[0]
        field = self.PARAMS.get(head, head)
        if field not in self.fields:
            self.add_error(None, message)
        elif path and path != head and not message.startswith(path):
            self.add_error(field, f"{path}: {message}")
        else:
            self.add_error(field, message)


class OwnerForm(ServiceErrors):
    """A form whose ``owner`` choices depend on who is asking."""

    # Whether the platform (no owner) may own the thing.
    PLATFORM_OWNED = False

    owner = forms.ChoiceField(label=_("所有者"))

    def __init__(self, user: Any, orgs: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        self.orgs = orgs
        field = self.fields["owner"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = owner_choices(user, orgs, self.PLATFORM_OWNED)

    def chosen_owner(self) -> Organization | Any | None:
        return owner_of(self.cleaned_data["owner"], self.user, self.orgs)


class QueueFilter(forms.Form):
    """The review queue's filters (all optional)."""

    status = forms.ChoiceField(
        label=pgettext_lazy("governance", "状态"),
        required=False,
        choices=[("", _("全部")), *shown(ReviewStatus.choices)],
    )
    source = forms.ChoiceField(
        label=pgettext_lazy("governance", "来源"),
        required=False,
        choices=[("", _("全部")), *shown(DecisionSource.choices)],
    )
    overdue = forms.BooleanField(label=_("仅超时"), required=False)
    mine = forms.BooleanField(label=_("仅分配给我"), required=False)


class DecideForm(forms.Form):
    """A reviewer's decision on an item; ``adjust_lexicon`` also adds or removes terms
    of one lexicon or allow-list."""

    decision = forms.ChoiceField(label=_("处理结果"), choices=shown(ReviewDecision.choices))
    notes = forms.CharField(
        label=_("备注"), required=False, widget=forms.Textarea(attrs={"rows": 3})
    )
    content_list = forms.ChoiceField(label=_("词库"), required=False)
    add_terms = forms.CharField(
        label=_("加入的词（每行一个）"), required=False, widget=forms.Textarea(attrs={"rows": 2})
    )
    remove_terms = forms.CharField(
        label=_("移除的词（每行一个）"), required=False, widget=forms.Textarea(attrs={"rows": 2})
    )
    category = forms.CharField(label=_("类别"), required=False, max_length=16)

    def __init__(self, lists: list[tuple[str, str]], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["content_list"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [("", "—"), *lists]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("decision") == ReviewDecision.ADJUST_LEXICON:
            if not data.get("content_list"):
                self.add_error("content_list", _("调整词库时请选择词库。"))
            elif not (lines(data.get("add_terms")) or lines(data.get("remove_terms"))):
                self.add_error("add_terms", _("请填写要加入或移除的词。"))
        return data

    def lexicon(self) -> dict[str, Any] | None:
        """The ``lexicon`` argument of ``review.decide`` (None unless adjusting)."""
        data = self.cleaned_data
        if data["decision"] != ReviewDecision.ADJUST_LEXICON:
            return None
        category = data.get("category") or ""
        added = lines(data.get("add_terms"))
        return {
            "list": int(data["content_list"]),
            "add": [{"text": t, "category": category} for t in added] if category else added,
            "remove": lines(data.get("remove_terms")),
        }


class AppealDecideForm(forms.Form):
    upheld = forms.TypedChoiceField(
        label=_("申诉结果"),
        coerce=lambda value: value == "1",
        choices=[("1", _("维持原决定")), ("0", _("撤销原决定"))],
    )
    response = forms.CharField(
        label=_("答复"), required=False, widget=forms.Textarea(attrs={"rows": 2})
    )


class PolicyForm(OwnerForm):
    """A policy with its three JSON documents; a document that is not JSON is an error
    on its field here, one that does not validate is the service's error on its path."""

    name = forms.SlugField(label=_("名称"), max_length=96)
    description = forms.CharField(label=_("描述"), required=False, widget=forms.TextInput)
    served_name = forms.CharField(label=_("仅限部署（模型名）"), required=False, max_length=200)
    api_key = forms.ChoiceField(label=_("仅限 API 密钥"), required=False)
    enabled = forms.BooleanField(label=_("启用"), required=False, initial=True)
    rules = forms.CharField(
        label=_("规则（JSON）"),
        required=False,
        initial="{}",
        widget=forms.Textarea(attrs={"rows": 12, "spellcheck": "false"}),
    )
    offenders = forms.CharField(
        label=_("违规用户处置（JSON）"),
        required=False,
        initial="{}",
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
    )
    labels = forms.CharField(
        label=_("显式标识（JSON）"),
        required=False,
        initial="{}",
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
    )

    def __init__(self, *args: Any, editing: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["api_key"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [("", "—"), *key_choices(self.user, self.orgs)]
        if editing:  # the owner and the name of a policy do not change
            del self.fields["owner"]
            self.fields["name"].disabled = True

    def _json(self, name: str) -> Any:
        raw = (self.cleaned_data.get(name) or "").strip() or "{}"
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(
                _("不是有效的 JSON（第 %(line)s 行第 %(col)s 列）：%(msg)s"),
                params={"line": exc.lineno, "col": exc.colno, "msg": exc.msg},
            ) from None
        if not isinstance(value, dict):
            raise forms.ValidationError(_("必须是一个 JSON 对象。"))
        return value

    def clean_rules(self) -> Any:
        return self._json("rules")

    def clean_offenders(self) -> Any:
        return self._json("offenders")

    def clean_labels(self) -> Any:
        return self._json("labels")

    def data_for_service(self) -> dict[str, Any]:
        """What ``create_policy`` / ``update_policy`` take (the API's fields)."""
        data = self.cleaned_data
        fields = ("description", "served_name", "enabled", *JSON_FIELDS)
        out: dict[str, Any] = {name: data[name] for name in fields}
        if "name" in data and not self.fields["name"].disabled:
            out["name"] = data["name"]
        out["api_key"] = int(data["api_key"]) if data.get("api_key") else None
        return out


def key_choices(user: Any, orgs: Any) -> list[tuple[str, str]]:
    """The active API keys a policy may narrow to: the user's own and those whose usage
    counts against an organisation they manage (the service checks the policy's owner)."""
    keys = (
        APIKey.objects.active()
        .filter(Q(user=user, organization__isnull=True) | Q(organization__in=orgs))
        .select_related("organization")
        .order_by("prefix")
    )
    return [
        (str(key.pk), f"{key.prefix}… {key.name} ({key.organization or user.get_username()})")
        for key in keys[:500]
    ]


def as_json(value: Any) -> str:
    return json.dumps(value or {}, ensure_ascii=False, indent=2)


class ListForm(OwnerForm):
    PLATFORM_OWNED = True

    name = forms.SlugField(label=_("名称"), max_length=96)
    kind = forms.ChoiceField(label=_("类型"), choices=shown(ListKind.choices))
    description = forms.CharField(label=_("描述"), required=False)
    default_category = forms.CharField(label=_("默认类别"), required=False, max_length=16)


class ItemsForm(ServiceErrors):
    """Add or remove items of a list (one per line; ``text<TAB>category`` names one)."""

    add = forms.CharField(
        label=_("加入（每行一条）"), required=False, widget=forms.Textarea(attrs={"rows": 4})
    )
    remove = forms.CharField(
        label=_("移除（每行一条）"), required=False, widget=forms.Textarea(attrs={"rows": 2})
    )
    category = forms.CharField(label=_("类别"), required=False, max_length=16)
    note = forms.CharField(label=_("修改说明"), required=False, max_length=500)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not (lines(data.get("add")) or lines(data.get("remove"))):
            raise forms.ValidationError(_("请填写要加入或移除的条目。"))
        return data

    PARAMS = {"default_category": "category"}


class ImportForm(ServiceErrors):
    PARAMS = {"format": "fmt", "default_category": "category"}

    file = forms.FileField(label=_("文件（txt 或 csv）"))
    fmt = forms.ChoiceField(label=_("格式"), choices=[("txt", "txt"), ("csv", "csv")])
    category = forms.CharField(label=_("默认类别"), required=False, max_length=16)
    replace = forms.BooleanField(label=_("替换现有条目"), required=False)
    note = forms.CharField(label=_("修改说明"), required=False, max_length=500)

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        if upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError(_("文件太大。"))
        return upload


class AuditFilter(forms.Form):
    action = forms.CharField(label=_("操作"), required=False, max_length=64)
    actor = forms.CharField(label=_("操作人"), required=False, max_length=150)
    target = forms.CharField(label=_("对象"), required=False, max_length=64)
    since = forms.DateField(
        label=_("起始日期"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        label=_("截止日期"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )


class ComplianceForm(OwnerForm):
    PARAMS = {"model": "served_name"}

    served_name = forms.CharField(label=_("部署的模型名"), max_length=200)


class VerifyForm(forms.Form):
    text = forms.CharField(
        label=_("粘贴文本"), required=False, widget=forms.Textarea(attrs={"rows": 6})
    )
    file = forms.FileField(label=_("或上传文件"), required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not data.get("text", "").strip() and not data.get("file"):
            raise forms.ValidationError(_("请粘贴文本或选择文件。"))
        upload = data.get("file")
        if upload is not None and upload.size > MAX_UPLOAD_BYTES:
            self.add_error("file", _("文件太大。"))
        return data


def lines(value: str | None) -> list[str]:
    """The non-empty stripped lines of a textarea, at most :data:`MAX_TERMS`."""
    found = [line.strip() for line in (value or "").splitlines()]
    return [line for line in found if line][:MAX_TERMS]
