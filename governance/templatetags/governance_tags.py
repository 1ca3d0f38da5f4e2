"""Template helpers of the governance pages and the portal's nav: whether the user may
open ``/governance/`` (the nav entry) and the zh-hans (or English) names of the
governance records' status and kind values."""

from __future__ import annotations

from typing import Any

from django import template

from governance import access
from governance.forms import LABELS

register = template.Library()


@register.filter
def can_govern(user: Any) -> bool:
    """True for staff and organisation owners and admins (the nav shows the entry)."""
    return access.can_govern(user)


@register.filter
def gv_label(value: Any) -> str:
    """The shown name of a status, source, direction or kind value."""
    return str(LABELS.get(str(value), value))
