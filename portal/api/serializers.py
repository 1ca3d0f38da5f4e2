from __future__ import annotations

from django.contrib.auth import get_user_model
from rest_framework import serializers

from portal.models import APIKey, Membership, ModelFile, ModelRepo, ModelVersion, Organization
from portal.models.keys import SCOPES

User = get_user_model()


class UserSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    email = serializers.CharField(read_only=True, help_text="May be empty.")

    class Meta:
        model = User
        fields = ["id", "username", "email", "is_staff", "date_joined"]
        read_only_fields = fields


class SignUpSerializer(serializers.Serializer):  # type: ignore[type-arg]
    username = serializers.CharField(max_length=64)
    password = serializers.CharField(max_length=128, write_only=True)
    email = serializers.EmailField(required=False, allow_blank=True, default="")


class LoginSerializer(serializers.Serializer):  # type: ignore[type-arg]
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=128, write_only=True)


class APIKeySerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """A key and its limits. Empty limits mean the platform defaults (``KEY_DEFAULT_*``);
    ``organization`` names the organisation the key's usage and budgets count against."""

    expires_in_days = serializers.IntegerField(
        write_only=True, required=False, min_value=1, max_value=3650
    )
    is_active = serializers.BooleanField(read_only=True)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=list(SCOPES)),
        required=False,
        allow_empty=False,
        max_length=len(SCOPES),
        help_text="What the key may be used for; default: all scopes.",
    )
    allowed_models = serializers.ListField(
        child=serializers.RegexField(
            r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}/([A-Za-z0-9][A-Za-z0-9_.-]{0,95}|\*)$",
            max_length=161,
        ),
        required=False,
        max_length=100,
        help_text="Served model names or 'namespace/*'; empty: any model the user may use.",
    )
    rpm_limit = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=1_000_000_000
    )
    tpm_limit = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=2_000_000_000
    )
    max_concurrent = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=1_000_000
    )
    organization = serializers.CharField(
        source="organization.name",
        required=False,
        allow_null=True,
        max_length=64,
        help_text="Bill to this organisation (you must be a member).",
    )

    class Meta:
        model = APIKey
        fields = [
            "id",
            "name",
            "prefix",
            "created_at",
            "expires_at",
            "revoked_at",
            "last_used_at",
            "is_active",
            "expires_in_days",
            "scopes",
            "allowed_models",
            "rpm_limit",
            "tpm_limit",
            "max_concurrent",
            "organization",
        ]
        read_only_fields = [
            "id",
            "prefix",
            "created_at",
            "expires_at",
            "revoked_at",
            "last_used_at",
        ]


class OrganizationSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    role = serializers.SerializerMethodField()

    class Meta:
        model = Organization
        fields = [
            "id",
            "name",
            "display_name",
            "description",
            "created_at",
            "role",
            "monthly_token_budget",
            "monthly_spend_budget_cny",
        ]
        # Budgets are set by the platform's admins (Django admin).
        read_only_fields = [
            "id",
            "created_at",
            "role",
            "monthly_token_budget",
            "monthly_spend_budget_cny",
        ]

    def get_role(self, org: Organization) -> str | None:
        user = self.context["request"].user
        member = org.memberships.filter(user=user).first()
        return member.role if member else None


class MembershipSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    username = serializers.CharField(source="user.username")

    class Meta:
        model = Membership
        fields = ["username", "role", "created_at"]
        extra_kwargs = {"role": {"required": True}}


class ModelFileSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = ModelFile
        fields = ["path", "size", "sha256"]


class ModelVersionSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    files = ModelFileSerializer(many=True, read_only=True)

    class Meta:
        model = ModelVersion
        fields = [
            "number",
            "revision",
            "architecture",
            "model_type",
            "base_model",
            "has_chat_template",
            "total_bytes",
            "message",
            "created_at",
            "files",
        ]
        read_only_fields = fields


class ModelRepoSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    id = serializers.CharField(source="full_name", read_only=True)
    latest_version = serializers.SerializerMethodField()

    class Meta:
        model = ModelRepo
        fields = [
            "id",
            "namespace",
            "name",
            "visibility",
            "description",
            "pipeline_tag",
            "license",
            "tags",
            "card_data",
            "card",
            "created_at",
            "updated_at",
            "latest_version",
            "price_input_cny_per_m",
            "price_output_cny_per_m",
        ]
        # Visibility and description are edited here; the rest comes from the card, and
        # prices from the platform's admins.
        read_only_fields = [f for f in fields if f not in ("visibility", "description")]

    def get_latest_version(self, repo: ModelRepo) -> int | None:
        annotated = getattr(repo, "latest_number", None)  # set by the viewset's queryset
        if annotated is not None:
            return int(annotated)
        latest = repo.latest_version()
        return latest.number if latest else None

    def validate_visibility(self, value: str) -> str:
        repo = self.instance
        if value == "org" and repo is not None and repo.owner_user_id is not None:
            raise serializers.ValidationError("Only organisation models can be 'org'.")
        return value
