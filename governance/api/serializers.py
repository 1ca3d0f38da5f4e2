"""Serializers of the policies, lists and suspensions API (``governance.api.policies``).

Input serializers check shapes only; the documents (rules, items) are validated by the
services, whose errors name the field path.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from governance.models import (
    ContentList,
    ContentListVersion,
    ListKind,
    Policy,
    Suspension,
    SuspensionLevel,
)
from governance.services import lists, suspensions
from portal.models.accounts import NAMESPACE_RE

MAX_ID = 2**62


# A plain serializer (input or output), never saved; no docstring, so that none is
# inherited into the OpenAPI descriptions of its subclasses.
class Serializer(serializers.Serializer):  # type: ignore[type-arg]
    pass


def _owner(row: Any) -> str | None:
    """The owner's namespace; None for the platform's own rows."""
    if row.owner_user_id is None and row.owner_org_id is None:
        return None
    return str(row.namespace)


# --- policies -----------------------------------------------------------------------------


class PolicySerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    owner = serializers.SerializerMethodField(help_text="The owner's namespace")
    api_key = serializers.IntegerField(
        source="api_key_id", allow_null=True, help_text="The API key it is narrowed to"
    )
    api_key_prefix = serializers.CharField(
        source="api_key.prefix", allow_null=True, default=None, help_text="That key's prefix"
    )
    created_by = serializers.CharField(source="created_by.username", allow_null=True, default=None)

    class Meta:
        model = Policy
        fields = ["id", "owner", "name", "description", "served_name", "api_key"]
        fields += ["api_key_prefix", "rules", "offenders", "labels", "enabled", "version"]
        fields += ["created_by", "created_at", "updated_at"]
        read_only_fields = fields

    def get_owner(self, row: Policy) -> str | None:
        return _owner(row)


class PolicyWriteSerializer(Serializer):
    name = serializers.RegexField(NAMESPACE_RE)
    description = serializers.CharField(max_length=5000, required=False, allow_blank=True)
    served_name = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        help_text="Narrow to one deployment: a served model name of the owner",
    )
    api_key = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=MAX_ID,
        help_text="Narrow to one API key of the owner (its id)",
    )
    rules = serializers.JSONField(
        required=False,
        help_text='{category: {"input"|"output": {"threshold": 0..1, "action": '
        '"allow"|"flag"|"redact"|"block"}}}; category: a risk (A1_d), a class (A1), '
        "a detector (PII_ID_CARD) or 'default'",
    )
    offenders = serializers.JSONField(
        required=False,
        help_text="window_s, throttle_after, throttle_rpm, suspend_after, suspend_s",
    )
    labels = serializers.JSONField(
        required=False, help_text='{"explicit": "none"|"start"|"end", "text": str}'
    )
    enabled = serializers.BooleanField(required=False)


class PolicyCreateSerializer(PolicyWriteSerializer):
    owner = serializers.RegexField(
        NAMESPACE_RE, required=False, help_text="Your username (default) or an organisation"
    )


class PolicyQuerySerializer(Serializer):
    owner = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=64,
        help_text="Only this owner's (a namespace)",
    )


# --- lists --------------------------------------------------------------------------------


class ListItemSerializer(Serializer):
    text = serializers.CharField()
    category = serializers.CharField(allow_blank=True)
    weight = serializers.FloatField(required=False, help_text="0..1; absent: 1")


class ContentListSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    owner = serializers.SerializerMethodField(help_text="Namespace; null: the platform's")
    version = serializers.IntegerField(source="current.number", allow_null=True, default=None)
    item_count = serializers.IntegerField(source="current.item_count", default=0)
    sha256 = serializers.CharField(source="current.sha256", default="")
    created_by = serializers.CharField(source="created_by.username", allow_null=True, default=None)

    class Meta:
        model = ContentList
        fields = ["id", "owner", "name", "kind", "description", "default_category", "builtin"]
        fields += ["version", "item_count", "sha256", "created_by", "created_at", "updated_at"]
        read_only_fields = fields

    def get_owner(self, row: ContentList) -> str | None:
        return _owner(row)


class ContentListCreateSerializer(Serializer):
    owner = serializers.RegexField(
        NAMESPACE_RE, required=False, help_text="Your username (default) or an organisation"
    )
    platform = serializers.BooleanField(
        default=False, help_text="A platform list, applied to all traffic (staff only)"
    )
    name = serializers.RegexField(NAMESPACE_RE)
    kind = serializers.ChoiceField(ListKind.choices)
    description = serializers.CharField(max_length=5000, required=False, allow_blank=True)
    default_category = serializers.CharField(
        max_length=16, required=False, allow_blank=True, help_text="For items that name none"
    )
    items = serializers.JSONField(
        required=False, help_text='Strings, or {"text", "category"?, "weight"?} objects'
    )
    note = serializers.CharField(max_length=500, required=False, allow_blank=True)


class ListQuerySerializer(Serializer):
    owner = serializers.CharField(
        required=False, allow_blank=True, max_length=64, help_text="A namespace"
    )
    kind = serializers.ChoiceField(ListKind.choices, required=False)
    platform = serializers.BooleanField(
        required=False, allow_null=True, default=None, help_text="Only platform lists, or none"
    )


class ListVersionSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    created_by = serializers.CharField(source="created_by.username", allow_null=True, default=None)

    class Meta:
        model = ContentListVersion
        fields = ["number", "item_count", "sha256", "note", "created_by", "created_at"]
        read_only_fields = fields


class ListVersionDetailSerializer(ListVersionSerializer):
    items = ListItemSerializer(many=True, read_only=True)

    class Meta(ListVersionSerializer.Meta):
        fields = [*ListVersionSerializer.Meta.fields, "items"]
        read_only_fields = fields


class ListVersionCreateSerializer(Serializer):
    items = serializers.JSONField(
        help_text='The whole new list: strings, or {"text", "category"?, "weight"?} objects'
    )
    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class ItemsChangeSerializer(Serializer):
    add = serializers.JSONField(
        required=False, help_text='Strings, or {"text", "category"?, "weight"?} objects'
    )
    remove = serializers.JSONField(
        required=False,
        help_text='Texts (every item with that text), or {"text", "category"} pairs',
    )
    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class ImportSerializer(Serializer):
    file = serializers.FileField(
        allow_empty_file=True,
        use_url=False,
        help_text="txt: text[TAB category[TAB weight]] per line; csv: text,category[,weight]",
    )
    format = serializers.ChoiceField(
        [(f, f) for f in lists.FORMATS],
        required=False,
        help_text="txt or csv; default: from the file name",
    )
    replace = serializers.BooleanField(
        default=False, help_text="Replace the current items (default: add to them)"
    )
    default_category = serializers.CharField(
        max_length=16, required=False, allow_blank=True, default=""
    )
    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class ExportQuerySerializer(Serializer):
    format = serializers.ChoiceField(
        [(f, f) for f in lists.FORMATS],
        required=False,
        help_text="txt or csv; default: what the Accept header asks for, else txt",
    )


# --- suspensions --------------------------------------------------------------------------


class SuspensionSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    user = serializers.CharField(source="user.username")
    org = serializers.CharField(source="org.name", allow_null=True, default=None)
    lifted_by = serializers.CharField(source="lifted_by.username", allow_null=True, default=None)
    active = serializers.SerializerMethodField(help_text="In force now")

    class Meta:
        model = Suspension
        fields = ["id", "user", "user_id", "org", "level", "reason", "violations", "until"]
        fields += ["active", "lifted_by", "lifted_at", "created_at"]
        read_only_fields = fields

    def get_active(self, row: Suspension) -> bool:
        return suspensions.is_active(row)


class SuspensionCreateSerializer(Serializer):
    user = serializers.RegexField(NAMESPACE_RE, help_text="The username")
    org = serializers.RegexField(
        NAMESPACE_RE, required=False, help_text="The organisation (managers: required)"
    )
    level = serializers.ChoiceField(SuspensionLevel.choices)
    until = serializers.DateTimeField(
        required=False, allow_null=True, help_text="null: until lifted"
    )
    reason = serializers.CharField(max_length=suspensions.MAX_REASON, allow_blank=True, default="")


class SuspensionQuerySerializer(Serializer):
    active = serializers.BooleanField(
        required=False, allow_null=True, default=None, help_text="Only those in force (or not)"
    )
    user = serializers.CharField(
        required=False, allow_blank=True, max_length=150, help_text="A username"
    )
