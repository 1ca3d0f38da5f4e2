"""Ownership and visibility shared by every owned resource of every app.

A resource is owned by a user or an organisation and is ``public``, ``org`` (every
member of the owning organisation) or ``private`` (the owning user, or the owning
organisation's owners and admins). ``OwnedQuerySet.restrict`` is the one place that
turns a principal into a queryset filter; :func:`Principal.can_read` is the same rule
on a snapshot, for the gateway's hot path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self, TypeVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from portal.models.accounts import Membership, Organization, Role

Action = Literal["read", "write"]
_M = TypeVar("_M", bound=models.Model)


class Visibility(models.TextChoices):
    PUBLIC = "public", "Public"
    ORG = "org", "Organisation"
    PRIVATE = "private", "Private"


@dataclass(frozen=True)
class Principal:
    """Who is asking: a user id (None when anonymous) and their organisation roles."""

    user_id: int | None
    is_superuser: bool = False
    org_roles: dict[int, str] = field(default_factory=dict)

    @classmethod
    def of(cls, user: Any) -> Principal:
        if user is None or not getattr(user, "is_authenticated", False):
            return cls(user_id=None)
        roles = dict(
            Membership.objects.filter(user_id=user.pk).values_list("organization_id", "role")
        )
        return cls(user_id=user.pk, is_superuser=user.is_superuser, org_roles=roles)

    def can_read(
        self, owner_user_id: int | None, owner_org_id: int | None, visibility: str
    ) -> bool:
        if visibility == Visibility.PUBLIC or self.is_superuser:
            return True
        if self.user_id is None:
            return False
        if owner_user_id is not None:
            return owner_user_id == self.user_id
        role = self.org_roles.get(owner_org_id or -1)
        if role is None:
            return False
        return visibility == Visibility.ORG or role in Role.managers()


class OwnedQuerySet(models.QuerySet[_M]):
    def restrict(self, user: Any, action: Action = "read") -> Self:
        """Only the rows ``user`` may ``read`` or ``write``; the single tenancy filter."""
        if getattr(user, "is_superuser", False):
            return self
        if user is None or not user.is_authenticated:
            return self.filter(visibility=Visibility.PUBLIC) if action == "read" else self.none()
        managed = Membership.objects.filter(user=user, role__in=Role.managers()).values(
            "organization_id"
        )
        allowed = Q(owner_user=user) | Q(owner_org__in=managed)
        if action == "read":
            member_of = Membership.objects.filter(user=user).values("organization_id")
            allowed |= Q(visibility=Visibility.PUBLIC)
            allowed |= Q(visibility=Visibility.ORG, owner_org__in=member_of)
        return self.filter(allowed)


class OwnedManager(models.Manager[_M]):
    """The manager of every owned model: ``Model.objects.restrict(user, action)``."""

    def get_queryset(self) -> OwnedQuerySet[_M]:
        return OwnedQuerySet(self.model, using=self._db)

    def restrict(self, user: Any, action: Action = "read") -> OwnedQuerySet[_M]:
        return self.get_queryset().restrict(user, action)


class OwnedModel(models.Model):
    """Abstract base: ``owner_user`` xor ``owner_org``, a namespace and a visibility."""

    owner_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
    )
    owner_org = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    namespace = models.CharField(max_length=64, db_index=True)
    visibility = models.CharField(
        max_length=8, choices=Visibility.choices, default=Visibility.PRIVATE
    )

    objects: ClassVar[OwnedManager[Self]] = OwnedManager()

    class Meta:
        abstract = True

    def clean(self) -> None:
        if (self.owner_user_id is None) == (self.owner_org_id is None):
            raise ValidationError("A resource has exactly one owner: a user or an organisation.")
        if self.owner_user_id is not None and self.visibility == Visibility.ORG:
            raise ValidationError({"visibility": "Only organisation resources can be 'org'."})

    @staticmethod
    def namespace_of(owner: Any) -> str:
        """The namespace of a user or an organisation: its name."""
        return owner.name if isinstance(owner, Organization) else str(owner.get_username())

    def set_owner(self, owner: Any) -> None:
        """Own by a user or an organisation; the namespace follows the owner's name."""
        is_org = isinstance(owner, Organization)
        self.owner_org = owner if is_org else None
        self.owner_user = None if is_org else owner
        self.namespace = self.namespace_of(owner)
