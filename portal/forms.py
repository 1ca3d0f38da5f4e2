"""Forms of the portal's pages; they call the same services as the API."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from portal.errors import PlatformError
from portal.services import accounts


class SignUpForm(forms.Form):
    username = forms.CharField(label=_("用户名"), max_length=64)
    email = forms.EmailField(label=_("邮箱"), required=False)
    password = forms.CharField(label=_("密码"), widget=forms.PasswordInput, max_length=128)

    def save(self) -> Any:
        """Create the user; form errors instead of exceptions for bad input."""
        try:
            return accounts.sign_up(**self.cleaned_data)
        except PlatformError as exc:
            self.add_error(exc.param if exc.param in self.fields else None, exc.message)
            return None


class APIKeyForm(forms.Form):
    name = forms.CharField(label=_("名称"), max_length=100, required=False)
    expires_in_days = forms.IntegerField(
        label=_("有效期（天）"), required=False, min_value=1, max_value=3650
    )
