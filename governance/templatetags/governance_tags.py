"""Template helpers of the governance pages: the zh-hans (or English) names of the
governance records' status and kind values. (Whether the nav shows the governance entry
is the ``can_govern`` context variable of :mod:`governance.context`.)"""

from __future__ import annotations

from typing import Any

from django import template

from governance.forms import LABELS

register = template.Library()


@register.filter
def gv_label(value: Any) -> str:
    """The shown name of a status, source, direction or kind value."""
    return str(LABELS.get(str(value), value))
