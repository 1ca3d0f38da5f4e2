"""Organisations and memberships. Users are Django's own ``auth.User``."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

NAMESPACE_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
namespace_validator = RegexValidator(
    NAMESPACE_RE, "Use letters, digits, '-', '_' and '.', starting with a letter or digit."
)


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"

    @classmethod
    def managers(cls) -> list[str]:
        """Roles that may change the organisation's resources."""
        return [cls.OWNER, cls.ADMIN]


class Organization(models.Model):
    name = models.CharField(max_length=64, unique=True, validators=[namespace_validator])
    display_name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="organizations"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "user"], name="unique_membership")
        ]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.organization_id}:{self.role}"
