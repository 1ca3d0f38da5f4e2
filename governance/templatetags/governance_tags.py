"""Template helpers of the governance pages and the portal's nav: whether the user may
open ``/governance/`` (the nav entry) and the zh-hans (or English) names of the
governance records' status and kind values."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.translation import gettext_lazy as _

from governance import access

register = template.Library()

LABELS: dict[str, Any] = {
    # review items
    "pending": _("待审核"),
    "approved": _("已通过"),
    "removed": _("已删除"),
    "escalated": _("已升级"),
    # decisions
    "approve": _("通过"),
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
    "running": _("进行中"),
    "finished": _("已完成"),
    "failed": _("失败"),
}


@register.filter
def can_govern(user: Any) -> bool:
    """True for staff and organisation owners and admins (the nav shows the entry)."""
    return access.can_govern(user)


@register.filter
def gv_label(value: Any) -> str:
    """The shown name of a status, source, direction or kind value."""
    return str(LABELS.get(str(value), value))
