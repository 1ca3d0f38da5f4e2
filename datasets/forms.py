"""Forms of the dataset pages; they call the same services as the API."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from datasets.models import DatasetRepo
from datasets.services.repos import create_repo, may_write_owner
from portal.errors import PlatformError
from portal.models import Organization, Visibility

VISIBILITY_CHOICES = [
    (Visibility.PRIVATE, _("私有")),
    (Visibility.ORG, _("组织内可见")),
    (Visibility.PUBLIC, _("公开")),
]


class NewDatasetForm(forms.Form):
    """Create ``owner/name``: the owner is the user or an organisation they manage."""

    owner = forms.ChoiceField(label=_("所有者"))
    name = forms.CharField(label=_("数据集名称"), max_length=96)
    description = forms.CharField(label=_("简介"), max_length=500, required=False)
    license = forms.CharField(label=_("许可证"), max_length=64, required=False)
    visibility = forms.ChoiceField(
        label=_("可见性"), choices=VISIBILITY_CHOICES, initial=Visibility.PRIVATE
    )

    def __init__(self, user: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        self.owners: dict[str, Any] = {user.username: user}
        for org in Organization.objects.filter(memberships__user=user).order_by("name"):
            if may_write_owner(user, org):
                self.owners[org.name] = org
        owner_field = self.fields["owner"]
        assert isinstance(owner_field, forms.ChoiceField)
        owner_field.choices = [(name, name) for name in self.owners]

    def save(self) -> DatasetRepo | None:
        """Create the repo; form errors instead of exceptions for bad input."""
        data = self.cleaned_data
        card = f"---\nlicense: {data['license']}\n---\n" if data["license"] else ""
        try:
            return create_repo(
                self.user,
                self.owners[data["owner"]],
                data["name"],
                visibility=data["visibility"],
                description=data["description"],
                card=card,
            )
        except PlatformError as exc:
            self.add_error(exc.param if exc.param in self.fields else None, exc.message)
            return None
