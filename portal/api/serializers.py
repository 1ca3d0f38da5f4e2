from __future__ import annotations

from django.contrib.auth import get_user_model
from rest_framework import serializers

from portal.models import APIKey, Membership, ModelFile, ModelRepo, ModelVersion, Organization

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
    expires_in_days = serializers.IntegerField(
        write_only=True, required=False, min_value=1, max_value=3650
    )
    is_active = serializers.BooleanField(read_only=True)

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
        fields = ["id", "name", "display_name", "description", "created_at", "role"]
        read_only_fields = ["id", "created_at", "role"]

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
        ]
        # Visibility and description are edited here; the rest comes from the card.
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
