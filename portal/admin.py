from django.contrib import admin

from portal.models import (
    APIKey,
    Membership,
    ModelFile,
    ModelRepo,
    ModelVersion,
    Organization,
    UserBudget,
)


class MembershipInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Membership
    extra = 0


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "name",
        "display_name",
        "monthly_token_budget",
        "monthly_spend_budget_cny",
        "created_at",
    ]
    search_fields = ["name", "display_name"]
    inlines = [MembershipInline]


@admin.register(APIKey)
class APIKeyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "prefix",
        "name",
        "user",
        "organization",
        "rpm_limit",
        "tpm_limit",
        "created_at",
        "expires_at",
        "revoked_at",
    ]
    readonly_fields = ["prefix", "key_hash", "last_used_at"]
    search_fields = ["prefix", "name", "user__username"]


class ModelVersionInline(admin.TabularInline):  # type: ignore[type-arg]
    model = ModelVersion
    extra = 0
    fields = ("number", "revision", "architecture", "total_bytes", "created_at", "trusted")
    readonly_fields = fields[:-1]  # ``trusted``: admins allow the version's remote code


@admin.register(ModelRepo)
class ModelRepoAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "namespace",
        "name",
        "visibility",
        "price_input_cny_per_m",
        "price_output_cny_per_m",
        "updated_at",
    ]
    list_filter = ["visibility", "pipeline_tag"]
    search_fields = ["namespace", "name"]
    inlines = [ModelVersionInline]


@admin.register(ModelFile)
class ModelFileAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["version", "path", "size", "sha256"]


@admin.register(UserBudget)
class UserBudgetAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["user", "monthly_token_budget", "monthly_spend_budget_cny"]
    search_fields = ["user__username"]
